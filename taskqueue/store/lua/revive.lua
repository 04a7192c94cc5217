-- Take one task out of the dead-letter store and enqueue it again, atomically.
-- KEYS[1] = dead hash, KEYS[2] = dead index zset, KEYS[3] = ready list of its queue
-- ARGV[1] = task id, ARGV[2] = message to enqueue (attempts reset)
-- ARGV[3..7] (a task with lifecycle events on only, SPEC §13) = events stream, its max_len, task name, queue
-- name, stats hash: the revive writes its `enqueued` event
-- Returns 1, or 0 when the id was no longer dead (retried or purged meanwhile).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[2])
if ARGV[3] then
  enqueued_event(ARGV[3], ARGV[4], ARGV[1], ARGV[5], ARGV[6], enqueued_at())
  redis.call('HINCRBY', ARGV[7], 'events:enqueued', 1)
end
return 1
