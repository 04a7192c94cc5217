-- An enqueue of tasks with lifecycle events on (SPEC §13): the producer's push (a plain LPUSH, the
-- bounded-queue push or the delayed push, as enqueue.lua and schedule.lua do them) and one `enqueued` event
-- per such task, in one script: the event exists exactly when the push happened.
-- KEYS[1] = ready list ({p}:queue:<name>), or the delayed zset for "delayed"
-- KEYS[2] = events stream ({p}:events), KEYS[3] = stats hash (counts events:enqueued)
-- ARGV[1] = "lpush" | "bounded" | "delayed", ARGV[2] = the stream's max_len, ARGV[3] = queue name,
-- ARGV[4] = E, then E pairs of task id and task name (the tasks of this push with events on)
-- then the push's own arguments: lpush: messages; bounded: max_length, messages; delayed: wake channel,
-- pairs of due time (ms) and member
-- Returns what the push returns: the list's length (-1 when a bounded queue is full: nothing is written),
-- or the number of delayed members added.
local mode, maxlen, queue = ARGV[1], ARGV[2], ARGV[3]
local count = tonumber(ARGV[4])
local first = 5 + 2 * count
local reply
if mode == 'delayed' then
  local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local earliest = head[2] and tonumber(head[2]) or math.huge
  reply = redis.call('ZADD', KEYS[1], unpack(ARGV, first + 1))
  for i = first + 1, #ARGV, 2 do
    if tonumber(ARGV[i]) < earliest then
      redis.call('PUBLISH', ARGV[first], ARGV[i])
      break
    end
  end
else
  if mode == 'bounded' then
    if tonumber(ARGV[first]) - redis.call('LLEN', KEYS[1]) < #ARGV - first then
      return -1
    end
    first = first + 1
  end
  reply = redis.call('LPUSH', KEYS[1], unpack(ARGV, first))
end
local at = enqueued_at()
for i = 5, 4 + 2 * count, 2 do
  enqueued_event(KEYS[2], maxlen, ARGV[i], ARGV[i + 1], queue, at)
end
redis.call('HINCRBY', KEYS[3], 'events:enqueued', count)
return reply
