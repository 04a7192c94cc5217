-- Effect "limit_release" (taskqueue/features/limits.py): a task held by a concurrency limit settled
-- (succeeded, failed or was dead-lettered): it stops holding, and the oldest task waiting on the same
-- limit goes to the front of its ready list, to be admitted next.
-- Arguments: holders zset, holder member, waiting list, ready-list key prefix.
arity.limit_release = 4
hooks.limit_release = function(argv, i)
  redis.call('ZREM', argv[i], argv[i + 1])
  local member = redis.call('RPOP', argv[i + 2])
  if member then
    local bar = string.find(member, '|', 1, true)
    redis.call('RPUSH', argv[i + 3] .. string.sub(member, 1, bar - 1), string.sub(member, bar + 1))
  end
  return i + 4
end
