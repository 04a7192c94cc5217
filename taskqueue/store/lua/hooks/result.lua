-- Effect "result" (taskqueue/features/results.py): store a finished task's result.
-- Arguments: result key, time to live (ms), value (msgpack).
arity.result = 3
hooks.result = function(argv, i)
  redis.call('SET', argv[i], argv[i + 2], 'PX', argv[i + 1])
  return i + 3
end
