-- The `enqueued` lifecycle event (SPEC §13; see taskqueue/features/events.py for the fields), for the scripts
-- that put a task on a queue outside the settle scripts: evented.lua (the producer's push), unique.lua,
-- fire.lua (a schedule's fire) and revive.lua (`dead retry`). Stamped with Redis' clock (ms), trimmed to about
-- `maxlen` entries, counted in stats field events:enqueued (by `count`: once for a batch).
local function enqueued_at()
  local now = redis.call('TIME')
  return now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
end

local function enqueued_event(stream, maxlen, id, task, queue, at)
  local fields = { 'event', 'enqueued', 'id', id, 'task', task, 'queue', queue, 'attempt', '0', 'at', at }
  local workflow = string.match(id, '^(wf%-.+)%.%d+$')
  if workflow then
    fields[#fields + 1] = 'workflow'
    fields[#fields + 1] = workflow
  end
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
end
