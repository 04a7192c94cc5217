-- Move one in-flight message to the delayed set for a later attempt: the producer's delayed push
-- (schedule.lua's arguments, for one message) made atomic with the release of the in-flight entry.
-- KEYS[1] = in-flight hash of the worker that holds it
-- KEYS[2] = delayed zset
-- KEYS[3] = stats hash
-- ARGV[1] = token, ARGV[2] = S, number of stats fields to increment; ARGV[3 .. 2+S] = those fields
-- then the effects of this settle (see _prelude.lua)
-- then the push: wake channel, due time (ms), member ("<queue>|<new message>")
-- Returns 1, or 0 when the token was no longer held (already recovered elsewhere; nothing applied).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local s = tonumber(ARGV[2])
for f = 3, 2 + s do
  redis.call('HINCRBY', KEYS[3], ARGV[f], 1)
end
local i = apply_effects(ARGV, 3 + s)
local wake, due, member = ARGV[i], ARGV[i + 1], ARGV[i + 2]
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[2], due, member)
if not head[2] or tonumber(due) < tonumber(head[2]) then
  redis.call('PUBLISH', wake, due)
end
return 1
