-- A worker leaves (it stops, or it was found dead): settle its last acks and counters, hand every message
-- still in its in-flight hash back to the front of its queue, and drop its registration, all at once, so
-- there is never an in-flight hash without a lease that would expire and bring it back.
-- KEYS[1] = its in-flight hash, KEYS[2] = stats hash, KEYS[3] = workers zset, KEYS[4] = its info hash
-- ARGV[1] = worker id, ARGV[2] = ready-list key prefix ({p}:queue:)
-- ARGV[3] = A, number of tokens to acknowledge; ARGV[4 .. 3+A] = those tokens
-- ARGV[4+A] = C, number of counters; then C pairs of stats field and increment
-- then B acks that carry effects, as in exchange.lua
-- Returns the number of messages handed back.
local acks = tonumber(ARGV[3])
local i = 4
if acks > 0 then
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, i + acks - 1))
end
i = i + acks
local counters = tonumber(ARGV[i])
i = i + 1
for _ = 1, counters do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local hooked = tonumber(ARGV[i])
i = i + 1
for _ = 1, hooked do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    i = apply_effects(ARGV, i + 1)
  else
    i = skip_effects(ARGV, i + 1)
  end
end
local held = redis.call('HGETALL', KEYS[1])
for h = 2, #held, 2 do
  local member = held[h]
  local bar = string.find(member, '|', 1, true)
  redis.call('RPUSH', ARGV[2] .. string.sub(member, 1, bar - 1), string.sub(member, bar + 1))
end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[1])
return #held / 2
