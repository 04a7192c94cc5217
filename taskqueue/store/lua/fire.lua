-- One fire of a periodic schedule, at most once per fire time however many runners try.
-- Fire times of a schedule only move forward: a fire at or before the recorded last one is refused.
-- KEYS[1] = schedules state hash ({p}:schedules), KEYS[2] = ready list, KEYS[3] = stats hash
-- ARGV[1] = schedule name, ARGV[2] = fire time (ms), ARGV[3] = next fire time (ms)
-- ARGV[4] = "fire" or "skip", ARGV[5] = message (fire only), ARGV[6] = stats field counting the enqueue
-- ARGV[7..13] (a task with unique_for only) = its lock key, task id, hold (ms), result key prefix, dead hash,
-- stats hash, duplicates counter: while another task holds the key the fire is recorded but pushes nothing
-- (ARGV[7..13] are '' when the task has no unique_for but its lifecycle events are on)
-- ARGV[14..18] (a task with lifecycle events on only, SPEC §13) = events stream, its max_len, task id, task
-- name, queue name: the fire writes its `enqueued` event
-- Returns 1 when this call fired (or recorded the skip), 0 when another runner already had it.
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':last') or '-1')
if tonumber(ARGV[2]) <= last then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1] .. ':last', ARGV[2], ARGV[1] .. ':next', ARGV[3])
local lock = ARGV[7]
if lock == '' then
  lock = nil
end
if ARGV[4] == 'fire' and lock then
  local holder = redis.call('GET', lock)
  if holder and holder ~= ARGV[8] and redis.call('EXISTS', ARGV[10] .. holder) == 0
      and redis.call('HEXISTS', ARGV[11], holder) == 0 then
    redis.call('HINCRBY', ARGV[12], ARGV[13], 1)
    redis.call('HINCRBY', KEYS[3], 'schedule_skipped:' .. ARGV[1], 1)
    return 1
  end
  redis.call('SET', lock, ARGV[8], 'PX', ARGV[9])
end
if ARGV[4] == 'fire' then
  redis.call('LPUSH', KEYS[2], ARGV[5])
  redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
  redis.call('HSET', KEYS[1], ARGV[1] .. ':fired', ARGV[2])
  redis.call('HINCRBY', KEYS[3], 'schedule_fired:' .. ARGV[1], 1)
  if ARGV[14] then
    enqueued_event(ARGV[14], ARGV[15], ARGV[16], ARGV[17], ARGV[18], enqueued_at())
    redis.call('HINCRBY', KEYS[3], 'events:enqueued', 1)
  end
else
  redis.call('HINCRBY', KEYS[3], 'schedule_skipped:' .. ARGV[1], 1)
end
return 1
