-- Effect "limit_release" (taskqueue/features/limits.py): a task held by a concurrency limit settled
-- (succeeded, failed or was dead-lettered): it stops holding, and the oldest tasks waiting on the same limit
-- go to the front of their ready lists, as many as may start now (lua/lib/limits.lua: release); when its
-- rates hold the rest back, the timer is told when to look again.
-- Arguments: holder member, waiting list, ready-list key prefix, spec (JSON), workers zset, waiting index zset,
-- the delayed-task timer's wake channel.
arity.limit_release = 7
hooks.limit_release = function(argv, i)
  local spec = cjson.decode(argv[i + 3])
  redis.call('ZREM', spec.h, argv[i])
  local now = clock_ms()
  local _, left, again = release(argv[i + 1], spec, argv[i + 4], argv[i + 2], now, 100)
  if left > 0 then
    local head = redis.call('ZRANGE', argv[i + 5], 0, 0, 'WITHSCORES')
    redis.call('ZADD', argv[i + 5], 'LT', again, argv[i + 1])
    if not head[2] or again < tonumber(head[2]) then
      redis.call('PUBLISH', argv[i + 6], again)
    end
  end
  return i + 7
end
