-- Enqueue one task that holds a unique key (SPEC §11): the check and the enqueue are one step.
-- KEYS[1] = its lock ({p}:unique:<task>:<digest>), KEYS[2] = ready list, or the delayed zset
-- ARGV[1] = task id, ARGV[2] = hold (ms), ARGV[3] = result key prefix, ARGV[4] = dead hash,
-- ARGV[5] = stats hash, ARGV[6] = stats field counting duplicates,
-- ARGV[7] = "lpush" | "bounded" | "delayed", ARGV[8] = max_length (bounded) or due time in ms (delayed),
-- ARGV[9] = message (member "<queue>|<message>" when delayed), ARGV[10] = wake channel (delayed)
-- ARGV[11..14], only for a task with lifecycle events on (SPEC §13): events stream, its max_len, queue and
-- task name: its `enqueued` event is written with the enqueue
-- Returns 1 when enqueued, -1 when the bounded queue is full, or the id of the task holding the key.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. holder) == 0
    and redis.call('HEXISTS', ARGV[4], holder) == 0 then
  redis.call('HINCRBY', ARGV[5], ARGV[6], 1)
  return holder
end
if ARGV[7] == 'bounded' and redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[8]) then
  return -1
end
if ARGV[7] == 'delayed' then
  local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[2], ARGV[8], ARGV[9])
  if not head[2] or tonumber(ARGV[8]) < tonumber(head[2]) then
    redis.call('PUBLISH', ARGV[10], ARGV[8])
  end
else
  redis.call('LPUSH', KEYS[2], ARGV[9])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[11] then
  enqueued_event(ARGV[11], ARGV[12], ARGV[1], ARGV[14], ARGV[13], enqueued_at())
  redis.call('HINCRBY', ARGV[5], 'events:enqueued', 1)
end
return 1
