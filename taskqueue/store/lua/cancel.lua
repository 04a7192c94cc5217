-- Cancel a task (SPEC §11): remembered in the cancelled set, which every worker keeps a copy of (loaded at
-- start, kept current through the cancel channel), so it never starts, wherever it is now (ready list,
-- delayed set, a limit's waiting list, a worker that is offline) and a running one is stopped.
-- KEYS[1] = cancelled zset, KEYS[2] = its result key, KEYS[3] = dead hash
-- ARGV[1] = task id, ARGV[2] = now (ms), ARGV[3] = most ids kept, ARGV[4] = oldest time kept (ms),
-- ARGV[5] = cancel channel, ARGV[6] = result time to live (ms; '' = no result), ARGV[7] = result record
-- Returns 1; 2 when it was cancelled before (it stays as it is); 0 when the task has finished already (a result
-- or a dead-letter record exists).
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 2
end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[2], ARGV[7], 'PX', ARGV[6])
end
redis.call('PUBLISH', ARGV[5], ARGV[1])
return 1
