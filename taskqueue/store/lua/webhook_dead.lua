-- Keep one undeliverable webhook event (SPEC §13), within the store's bound (the oldest go first).
-- KEYS[1] = undeliverable hash ({p}:webhooks:dead), KEYS[2] = its index zset, KEYS[3] = stats hash
-- ARGV[1] = member ("<webhook>|<stream id>"), ARGV[2] = record (JSON), ARGV[3] = now (ms), ARGV[4] = most kept,
-- ARGV[5] = stats field counting undeliverable events
-- Returns how many were dropped to stay within the bound.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess <= 0 then
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
redis.call('HDEL', KEYS[1], unpack(oldest))
redis.call('ZREM', KEYS[2], unpack(oldest))
return #oldest
