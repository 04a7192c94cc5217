-- Effect "unique_release" (taskqueue/features/unique.py): a task that held a unique key finished
-- (succeeded, dead-lettered or cancelled): release the key, only if it is still this task's own
-- (compare and delete: after `unique_for` passed, another task may hold it now).
-- Arguments: lock key, task id.
arity.unique_release = 2
hooks.unique_release = function(argv, i)
  if redis.call('GET', argv[i]) == argv[i + 1] then
    redis.call('DEL', argv[i])
  end
  return i + 2
end
