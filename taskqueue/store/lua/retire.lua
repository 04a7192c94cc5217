-- A worker leaves (it stops, or it was found dead): settle its last acks and counters, hand every message
-- still in its in-flight hash back to the front of its queue, and drop its registration, all at once, so
-- there is never an in-flight hash without a lease that would expire and bring it back.
-- KEYS[1] = its in-flight hash, KEYS[2] = stats hash, KEYS[3] = workers zset, KEYS[4] = its info hash
-- ARGV[1] = worker id, ARGV[2] = ready-list key prefix ({p}:queue:)
-- ARGV[3..] = its outbox (settle_outbox in hooks/_prelude.lua)
-- Returns the number of messages handed back.
settle_outbox(KEYS[1], KEYS[2], ARGV, 3)
local held = redis.call('HGETALL', KEYS[1])
for h = 2, #held, 2 do
  local member = held[h]
  local bar = string.find(member, '|', 1, true)
  redis.call('RPUSH', ARGV[2] .. string.sub(member, 1, bar - 1), string.sub(member, bar + 1))
end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[1])
return #held / 2
