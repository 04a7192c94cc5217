-- Move one in-flight message to the delayed set for a later attempt.
-- KEYS[1] = in-flight hash of the worker that holds it
-- KEYS[2] = delayed zset
-- KEYS[3] = stats hash
-- ARGV[1] = token, ARGV[2] = due time (ms), ARGV[3] = member ("<queue>|<new message>")
-- ARGV[4] = wake channel, ARGV[5..] = stats fields to increment
-- Returns 1, or 0 when the token was no longer held (already recovered elsewhere).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
if not head[2] or tonumber(ARGV[2]) < tonumber(head[2]) then
  redis.call('PUBLISH', ARGV[4], ARGV[2])
end
for f = 5, #ARGV do
  redis.call('HINCRBY', KEYS[3], ARGV[f], 1)
end
return 1
