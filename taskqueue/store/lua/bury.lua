-- Dead-letter one message, then keep the dead store within its size and age bounds.
-- KEYS[1] = in-flight hash holding it (ignored when ARGV[1] is empty: not in flight)
-- KEYS[2] = dead hash, KEYS[3] = dead index zset, KEYS[4] = stats hash
-- ARGV[1] = token or "", ARGV[2] = task id, ARGV[3] = record, ARGV[4] = now (ms)
-- ARGV[5] = max_size, ARGV[6] = oldest time kept (ms), ARGV[7] = S, number of stats fields to
-- increment; ARGV[8 .. 7+S] = those fields; then the effects of this settle (see _prelude.lua)
-- Returns 1, or 0 when the token was no longer held (nothing is applied then).
if ARGV[1] ~= '' and redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[6], 'LIMIT', 0, 1000)
local excess = redis.call('ZCARD', KEYS[3]) - #old - tonumber(ARGV[5])
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[3], #old, #old + excess - 1)
  for _, id in ipairs(oldest) do
    old[#old + 1] = id
  end
end
if #old > 0 then
  redis.call('HDEL', KEYS[2], unpack(old))
  redis.call('ZREM', KEYS[3], unpack(old))
end
local s = tonumber(ARGV[7])
for f = 8, 7 + s do
  redis.call('HINCRBY', KEYS[4], ARGV[f], 1)
end
apply_effects(ARGV, 8 + s)
return 1
