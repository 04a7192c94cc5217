-- Effects "wf_done" (args: workflow hash key, step index, result, ready-list key prefix, result key, now,
-- stats hash, then the five of a workflow_finished event) and "wf_failed" (workflow hash key, step index, error,
-- result key, now, stats hash, then the same five); counted: workflows:succeeded, workflows:failed,
-- workflows:resumed. The five: events stream key ('' when the step's task has events off), its max_len, and
-- the step's task, queue and attempt (the workflow_finished event's fields, SPEC §13).
-- Effects "wf_done" and "wf_failed" (taskqueue/features/workflows.py): a step of a workflow settled. They
-- run inside the settle script that acknowledges (or dead-letters) the step, and only when its worker
-- still held it, so a workflow advances exactly once per step even when the step ran twice.
-- Workflow hash fields (per step i): t:i task, q:i queue, p:i/x:i message before/after its input,
-- in:i input source (cmsgpack: a step index or an array of sources), w:i steps still awaited,
-- d:i dependents (cmsgpack array), s:i state, r:i result (msgpack); and state, steps, left, failed,
-- ttl (ms), out (the workflow's result source); with lifecycle events (SPEC §13) for some step's task, e:i 1
-- for such a step and `events` / `events_max_len` (the stream and its bound): such a step's push writes its
-- `enqueued` event.

local function wf_array_header(n)
  if n < 16 then
    return string.char(0x90 + n)
  elseif n < 65536 then
    return struct.pack('>BI2', 0xdc, n)
  end
  return struct.pack('>BI4', 0xdd, n)
end

local function wf_resolve(key, source)
  if type(source) == 'number' then
    return redis.call('HGET', key, 'r:' .. source) or '\192'
  end
  local parts = { wf_array_header(#source) }
  for _, part in ipairs(source) do
    parts[#parts + 1] = wf_resolve(key, part)
  end
  return table.concat(parts)
end

-- a result record as taskqueue/features/results.py writes one: {status, value, error, finished_at}
local function wf_record(status, value, err, now)
  return string.char(0x84) .. cmsgpack.pack('status') .. cmsgpack.pack(status) .. cmsgpack.pack('value') .. value
    .. cmsgpack.pack('error') .. err .. cmsgpack.pack('finished_at') .. cmsgpack.pack(tonumber(now))
end

local function wf_enqueued(key, step, stats)
  local stream = redis.call('HGET', key, 'events')
  if not stream or not redis.call('HGET', key, 'e:' .. step) then
    return
  end
  local workflow_id = string.match(key, ':workflow:(.+)$')
  local found = redis.call('HMGET', key, 't:' .. step, 'q:' .. step, 'events_max_len')
  emit_event(stream, found[3], stats, { 'event', 'enqueued', 'id', workflow_id .. '.' .. step, 'task', found[1],
    'queue', found[2], 'attempt', '0', 'workflow', workflow_id })
end

local function wf_push(key, step, qprefix, stats)
  local source = redis.call('HGET', key, 'in:' .. step)
  local input = source and wf_resolve(key, cmsgpack.unpack(source)) or ''
  local message = redis.call('HGET', key, 'p:' .. step) .. input .. redis.call('HGET', key, 'x:' .. step)
  redis.call('LPUSH', qprefix .. redis.call('HGET', key, 'q:' .. step), message)
  redis.call('HSET', key, 's:' .. step, 'queued')
  wf_enqueued(key, step, stats)
end

-- a failed workflow whose failed steps all succeeded on retry: running again, held steps pushed
local function wf_resume(key, qprefix, rkey, stats)
  redis.call('HINCRBY', stats, 'workflows:resumed', 1)
  redis.call('HSET', key, 'state', 'running')
  redis.call('DEL', rkey)
  redis.call('PERSIST', key)
  for step = 0, tonumber(redis.call('HGET', key, 'steps')) - 1 do
    if redis.call('HGET', key, 's:' .. step) == 'ready' then
      wf_push(key, step, qprefix, stats)
    end
  end
end

-- Start a workflow (args: N, then N values: its hash key, stats hash, index zset, ready-list key prefix,
-- its id, its start time (ms), F and F field/value pairs, E and E pairs of queue name and message). The
-- index keeps the newest WF_INDEXED workflow ids by start time, for the dashboard. Returns (1 started or 0 when it exists
-- already, the index after it), so that a message naming a YAML workflow starts it exactly once: in the
-- settle script that acknowledges the message.
local WF_INDEXED = 10000
local function wf_start_at(argv, i)
  local after = i + 1 + tonumber(argv[i])
  local key, stats, index, qprefix, id, created = argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4], argv[i + 5], argv[i + 6]
  if redis.call('EXISTS', key) == 1 then
    return 0, after
  end
  local j = i + 8
  local last = j - 1 + 2 * tonumber(argv[i + 7])
  while j <= last do
    local k = math.min(j + 999, last) -- 1,000 arguments (500 pairs) per HSET: inside unpack()'s limit
    redis.call('HSET', key, unpack(argv, j, k))
    j = k + 1
  end
  local entries = tonumber(argv[j])
  j = j + 1
  for _ = 1, entries do
    redis.call('LPUSH', qprefix .. argv[j], argv[j + 1])
    j = j + 2
  end
  if redis.call('HEXISTS', key, 'events') == 1 then
    for step = 0, tonumber(redis.call('HGET', key, 'steps')) - 1 do
      if redis.call('HGET', key, 's:' .. step) == 'queued' then
        wf_enqueued(key, step, stats)
      end
    end
  end
  redis.call('HINCRBY', stats, 'workflows:started', 1)
  redis.call('ZADD', index, created, id)
  redis.call('ZREMRANGEBYRANK', index, 0, -WF_INDEXED - 1)
  return 1, after
end

arity.wf_start = -1
hooks.wf_start = function(argv, i)
  local _, after = wf_start_at(argv, i)
  return after
end

local function wf_event(argv, j, workflow_id, state, err)
  if argv[j] == '' then
    return
  end
  local fields = { 'event', 'workflow_finished', 'id', workflow_id, 'task', argv[j + 2], 'queue', argv[j + 3],
    'attempt', argv[j + 4], 'workflow', workflow_id, 'state', state }
  if err then
    fields[#fields + 1] = 'error'
    fields[#fields + 1] = err
  end
  emit_event(argv[j], argv[j + 1], argv[j - 1], fields)
end

local function wf_id(key)
  return string.match(key, ':workflow:(.+)$')
end

arity.wf_done = 12
hooks.wf_done = function(argv, i)
  local key, step, result, qprefix, rkey, now = argv[i], argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4], argv[i + 5]
  local stats = argv[i + 6]
  local state = redis.call('HGET', key, 'state')
  local before = redis.call('HGET', key, 's:' .. step)
  if not state or state == 'cancelled' or before == 'succeeded' then
    return i + 12
  end
  redis.call('HSET', key, 's:' .. step, 'succeeded', 'r:' .. step, result)
  if before == 'failed' and redis.call('HINCRBY', key, 'failed', -1) == 0 and state == 'failed' then
    wf_resume(key, qprefix, rkey, stats)
    state = 'running'
  end
  local dependents = redis.call('HGET', key, 'd:' .. step)
  if dependents then
    for _, next_step in ipairs(cmsgpack.unpack(dependents)) do
      if redis.call('HINCRBY', key, 'w:' .. next_step, -1) == 0 then
        if state == 'running' then
          wf_push(key, next_step, qprefix, stats)
        else
          redis.call('HSET', key, 's:' .. next_step, 'ready') -- held until the workflow resumes
        end
      end
    end
  end
  if redis.call('HINCRBY', key, 'left', -1) == 0 then
    local ttl = redis.call('HGET', key, 'ttl')
    local value = wf_resolve(key, cmsgpack.unpack(redis.call('HGET', key, 'out')))
    redis.call('HSET', key, 'state', 'succeeded')
    redis.call('SET', rkey, wf_record('ok', value, '\192', now), 'PX', ttl)
    redis.call('PEXPIRE', key, ttl)
    redis.call('HINCRBY', stats, 'workflows:succeeded', 1)
    wf_event(argv, i + 7, wf_id(key), 'succeeded', nil)
  end
  return i + 12
end

arity.wf_failed = 11
hooks.wf_failed = function(argv, i)
  local key, step, err, rkey, now, stats = argv[i], argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4], argv[i + 5]
  local state = redis.call('HGET', key, 'state')
  if not state or state == 'cancelled' or state == 'succeeded' then
    return i + 11
  end
  if redis.call('HGET', key, 's:' .. step) ~= 'failed' then
    redis.call('HINCRBY', key, 'failed', 1)
    redis.call('HSET', key, 's:' .. step, 'failed')
  end
  if state ~= 'failed' then
    local ttl = redis.call('HGET', key, 'ttl')
    redis.call('HSET', key, 'state', 'failed')
    redis.call('SET', rkey, wf_record('dead', '\192', cmsgpack.pack('step ' .. step .. ' failed: ' .. err), now), 'PX', ttl)
    redis.call('PEXPIRE', key, ttl)
    redis.call('HINCRBY', stats, 'workflows:failed', 1)
    wf_event(argv, i + 6, wf_id(key), 'failed', 'step ' .. step .. ' failed: ' .. err)
  end
  return i + 11
end
