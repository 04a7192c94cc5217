-- A worker leaves (it stops, or it was found dead): record its last claims, settle its last acks and counters,
-- hand every message still in its in-flight hash or its claim lists back to the front of its queue, and drop
-- its registration, all at once, so there is never an in-flight hash or a claim list without a lease that
-- would expire and bring it back.
-- KEYS[1] = its in-flight hash, KEYS[2] = stats hash, KEYS[3] = workers zset, KEYS[4] = its info hash,
-- KEYS[5] = its fence (exchange.lua), KEYS[6 .. 5+Q] = ready lists, KEYS[6+Q .. 5+2Q] = its claim lists for them,
-- in the same order
-- ARGV[1] = worker id, ARGV[2] = ready-list key prefix ({p}:queue:), ARGV[3 .. 2+Q] = the queue names
-- then its claims (record_claims in hooks/_prelude.lua), then its outbox (settle_outbox), then the counters of its
-- last exchange if that got no answer (exchange.lua): S, its sequence number ('' for none), C, then C pairs of
-- stats field and increment, added only if that exchange was not applied (S above the fence); its
-- acks, effects and claims are in the outbox (applying those twice changes nothing)
-- Returns the number of messages handed back.
local q_count = (#KEYS - 5) / 2
local ready, claims, names = queues_of(5, 2, q_count)
local i = record_claims(KEYS[1], ready, claims, names, ARGV, 3 + q_count, nil)
i = settle_outbox(KEYS[1], KEYS[2], ARGV, i)
local seq = tonumber(ARGV[i])
local late = seq and seq > tonumber(redis.call('GET', KEYS[5]) or '0')
local held = redis.call('HGETALL', KEYS[1])
local left = {}
for q = 1, q_count do
  left[q] = redis.call('LRANGE', claims[q], 0, -1)
end
-- the deletions first: Redis at maxmemory refuses a script's first write only if it may add memory
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5], unpack(claims))
redis.call('ZREM', KEYS[3], ARGV[1])
for h = 2, #held, 2 do
  local member = held[h]
  local bar = string.find(member, '|', 1, true)
  redis.call('RPUSH', ARGV[2] .. string.sub(member, 1, bar - 1), string.sub(member, bar + 1))
end
local handed = #held / 2
for q = 1, q_count do -- taken by a watcher whose reply never arrived: the oldest ends up in front
  for _, message in ipairs(left[q]) do
    redis.call('RPUSH', ready[q], message)
  end
  handed = handed + #left[q]
end
if late then
  for c = i + 2, i + 1 + 2 * tonumber(ARGV[i + 1]), 2 do
    redis.call('HINCRBY', KEYS[2], ARGV[c], ARGV[c + 1])
  end
end
return handed
