-- Effect "limits_settle" (taskqueue/features/limits.py): a task under limits settled (succeeded, failed, was
-- dead-lettered or cancelled). A rated body that began: its start in each rate window moves back from the
-- latest time it might have begun to the latest it did (never forward). A holder of a concurrency limit stops
-- holding, and the oldest tasks waiting on the same limit go to the front of their ready lists, as many as may
-- start now (lua/lib/limits.lua: release). Whatever still waits, the timer is told when to look again.
-- Arguments: holder member or "", waiting list, ready-list key prefix, spec (JSON), workers zset, waiting index
-- zset, the delayed-task timer's wake channel, the start's member in the rate windows or "", when it began (ms).
arity.limits_settle = 9
hooks.limits_settle = function(argv, i)
  local spec = cjson.decode(argv[i + 3])
  if argv[i + 7] ~= '' then
    for _, r in ipairs(spec.r) do
      redis.call('ZADD', r[1], 'XX', 'LT', argv[i + 8], argv[i + 7])
    end
  end
  local now = clock_ms()
  local left, again = 0, now
  if argv[i] ~= '' then
    redis.call('ZREM', spec.h, argv[i])
    _, left, again = release(argv[i + 1], spec, argv[i + 4], argv[i + 2], now, 100)
  else
    left = redis.call('LLEN', argv[i + 1])
    if left > 0 then -- the timer lets them go (to whichever worker is free, not to this one's next take)
      local room
      room, again = room_of(spec, argv[i + 4], now, 1)
      if room > 0 then
        again = now
      end
    end
  end
  if left > 0 then
    local head = redis.call('ZRANGE', argv[i + 5], 0, 0, 'WITHSCORES')
    redis.call('ZADD', argv[i + 5], 'LT', again, argv[i + 1])
    if not head[2] or again < tonumber(head[2]) then
      redis.call('PUBLISH', argv[i + 6], again)
    end
  end
  return i + 9
end
