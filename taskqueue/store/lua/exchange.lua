-- A worker's one round trip: settle finished tasks, count them, and take up to N new ones.
-- Strict priority: a lower queue is read only when every higher one is empty.
-- KEYS[1] = this worker's in-flight hash ({p}:inflight:<worker>)
-- KEYS[2] = stats hash ({p}:stats)
-- KEYS[3..] = ready lists, highest priority first
-- ARGV[1] = N, most messages to take (free slots)
-- ARGV[2] = token base: taken messages get tokens base+1 .. base+n
-- ARGV[3..] = the outbox (settle_outbox in hooks/_prelude.lua): A tokens to acknowledge, C counters,
-- B tokens with their effects
-- then one queue name per ready list in KEYS[3..], in the same order
-- then, only when some task of this worker's configuration has events on (SPEC §13): the events stream key,
-- its max_len, E and E task names: a taken message of one of them gets its `started` event here, atomically
-- with the take (its name, id and attempt are read from the message only then)
-- Returns a flat array: token, queue index (1-based, into KEYS[3..]), message, token, ...
local n = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local i = settle_outbox(KEYS[1], KEYS[2], ARGV, 3)
local e = i + #KEYS - 2
local stream = ARGV[e]
local evented = nil
if stream then
  evented = {}
  for k = e + 3, e + 2 + tonumber(ARGV[e + 2]) do
    evented[ARGV[k]] = true
  end
end

local started_count = 0
local function started(queue, message)
  local first = string.byte(message, 1)
  local ok, env = pcall(function()
    if first and ((first >= 0x80 and first <= 0x8f) or first == 0xde or first == 0xdf) then
      return cmsgpack.unpack(message)
    end
    return cjson.decode(message)
  end)
  if not ok or type(env) ~= 'table' or type(env.task) ~= 'string' or not evented[env.task] then
    return
  end
  local id = type(env.id) == 'string' and env.id or ''
  local fields = { 'event', 'started', 'id', id, 'task', env.task, 'queue', queue, 'attempt', tostring((tonumber(env.attempt) or 0) + 1) }
  local workflow = string.match(id, '^(wf%-.+)%.%d+$')
  if workflow then
    fields[#fields + 1] = 'workflow'
    fields[#fields + 1] = workflow
  end
  emit_event(stream, ARGV[e + 1], nil, fields)
  started_count = started_count + 1
end

local out = {}
local held = {}
local got = 0
for q = 3, #KEYS do
  if got >= n then
    break
  end
  local messages = redis.call('RPOP', KEYS[q], n - got)
  if messages then
    local queue = ARGV[i + q - 3]
    for _, message in ipairs(messages) do
      got = got + 1
      local token = tostring(base + got)
      held[#held + 1] = token
      held[#held + 1] = queue .. '|' .. message
      out[#out + 1] = token
      out[#out + 1] = q - 2
      out[#out + 1] = message
      if evented then
        started(queue, message)
      end
    end
  end
end
if got > 0 then
  redis.call('HSET', KEYS[1], unpack(held))
end
if started_count > 0 then
  redis.call('HINCRBY', KEYS[2], 'events:started', started_count)
end
return out
