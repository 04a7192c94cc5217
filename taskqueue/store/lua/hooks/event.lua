-- Effect "event" (taskqueue/features/events.py): a task with events on settled (succeeded, retried, failed,
-- cancelled): its lifecycle event goes to the events stream in the same script as the settle itself.
-- Arguments: N (how many follow), the stream key, its max_len, the stats hash, then field/value pairs
-- starting with 'event', <name> ('at' is added here).
arity.event = -1
hooks.event = function(argv, i)
  local n = tonumber(argv[i])
  local fields = {}
  for j = i + 4, i + n do
    fields[#fields + 1] = argv[j]
  end
  emit_event(argv[i + 1], argv[i + 2], argv[i + 3], fields)
  return i + 1 + n
end
