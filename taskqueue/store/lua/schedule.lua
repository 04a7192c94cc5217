-- Add delayed messages; wake the timer when one of them becomes the earliest due.
-- KEYS[1] = delayed zset ({p}:delayed)
-- ARGV[1] = wake channel ({p}:delayed:wake)
-- ARGV[2..] = pairs of due time (ms) and member ("<queue>|<message>")
-- Returns the number added.
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local earliest = head[2] and tonumber(head[2]) or math.huge
local added = redis.call('ZADD', KEYS[1], unpack(ARGV, 2))
for i = 2, #ARGV, 2 do
  if tonumber(ARGV[i]) < earliest then
    redis.call('PUBLISH', ARGV[1], ARGV[i])
    break
  end
end
return added
