-- Cancel a workflow: it stops advancing (the step hooks ignore a cancelled workflow), its result says
-- cancelled, and every step that was pushed but has not finished is cancelled as a task is (cancel.lua).
-- KEYS[1] = workflow hash, KEYS[2] = its result key, KEYS[3] = cancelled zset, KEYS[4] = stats hash
-- ARGV[1] = workflow id, ARGV[2] = now (ms), ARGV[3] = most ids kept, ARGV[4] = oldest time kept (ms),
-- ARGV[5] = cancel channel, ARGV[6] = result record
-- Returns the number of steps cancelled; -1 when the workflow is unknown or has succeeded, -2 when it was
-- cancelled before (it stays as it is).
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'succeeded' then
  return -1
end
if state == 'cancelled' then
  return -2
end
local ttl = redis.call('HGET', KEYS[1], 'ttl')
redis.call('HSET', KEYS[1], 'state', 'cancelled')
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[2], ARGV[6], 'PX', ttl)
redis.call('HINCRBY', KEYS[4], 'workflows:cancelled', 1)
local cancelled = 0
for step = 0, tonumber(redis.call('HGET', KEYS[1], 'steps')) - 1 do
  local s = redis.call('HGET', KEYS[1], 's:' .. step)
  if s == 'queued' then
    local id = ARGV[1] .. '.' .. step
    redis.call('ZADD', KEYS[3], ARGV[2], id)
    redis.call('PUBLISH', ARGV[5], id)
    redis.call('HSET', KEYS[1], 's:' .. step, 'cancelled')
    cancelled = cancelled + 1
  elseif s ~= 'succeeded' and s ~= 'failed' then
    redis.call('HSET', KEYS[1], 's:' .. step, 'cancelled')
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[3]) - 1)
return cancelled
