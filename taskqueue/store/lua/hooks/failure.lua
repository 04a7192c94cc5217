-- Effect "failure" (Broker.retry with a failure, Broker.bury): remember one failed attempt for the dashboard's
-- "Recent failures", newest first, in a capped list. Only failures settle with it: a success never runs it.
-- Arguments: list key, how many to keep, record (msgpack {id, task, queue, attempt, error, at, retry_in, worker}).
arity.failure = 3
hooks.failure = function(argv, i)
  redis.call('LPUSH', argv[i], argv[i + 2])
  redis.call('LTRIM', argv[i], 0, tonumber(argv[i + 1]) - 1)
  return i + 3
end
