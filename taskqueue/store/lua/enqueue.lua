-- Enqueue into a bounded queue: all messages or none.
-- KEYS[1] = ready list of the queue ({p}:queue:<name>)
-- ARGV[1] = max_length of the queue
-- ARGV[2..] = messages
-- Returns the new length, or -1 when the messages do not fit (QueueFull).
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
if room < #ARGV - 1 then
  return -1
end
return redis.call('LPUSH', KEYS[1], unpack(ARGV, 2))
