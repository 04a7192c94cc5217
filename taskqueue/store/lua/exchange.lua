-- A worker's one round trip: record its claims, settle finished tasks, count them, and take up to N new ones.
-- Strict priority: a lower queue is read only when every higher one is empty.
-- KEYS[1] = this worker's in-flight hash ({p}:inflight:<worker>)
-- KEYS[2] = stats hash ({p}:stats)
-- KEYS[3] = this worker's fence ({p}:fence:<worker>): the number of its last request applied
-- KEYS[4 .. 3+Q] = ready lists, highest priority first; KEYS[4+Q .. 3+2Q] = this worker's claim lists
-- ({p}:claim:<worker>:<queue>), in the same order
-- ARGV[1] = S, this request's sequence number, or '' for a request that only does what may be done twice
-- (acks, claims; no counters, nothing taken). A network may deliver a request late, after the worker gave up
-- on it, or twice: a worker sends a request that got no answer again as it was, with the same S, until it is
-- answered, and numbers its next request S+1. So a request whose S is not above the last one applied was
-- applied already: nothing is applied again, and the answer is what its tokens hold (the messages it took).
-- ARGV[2] = N, most messages to take (free slots)
-- ARGV[3] = token base: taken messages get tokens base+1 .. base+n
-- ARGV[4 .. 3+Q] = the queue names, in the same order
-- ARGV[4+Q] = E: how many task names follow that have events on (SPEC §13), 0 when none; then the events
-- stream key, its max_len and the E names: a message of one of them, taken or claimed, gets its `started` event
-- here, atomically with the take (its name, id and attempt are read from the message only then)
-- then the claims (record_claims in hooks/_prelude.lua), then the outbox (settle_outbox): A tokens to
-- acknowledge, C counters, B tokens with their effects
-- Returns a flat array: token, queue index (1-based, into the ready lists), message, token, ...
local seq = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local base = tonumber(ARGV[3])
local q_count = (#KEYS - 3) / 2
local ready, claims, names = queues_of(3, 3, q_count)
if seq and seq <= tonumber(redis.call('GET', KEYS[3]) or '0') then
  local out = {}
  local index = {}
  for q = 1, q_count do
    index[names[q]] = q
  end
  for t = base + 1, base + n do
    local member = redis.call('HGET', KEYS[1], tostring(t))
    if member then
      local bar = string.find(member, '|', 1, true)
      out[#out + 1] = tostring(t)
      out[#out + 1] = index[string.sub(member, 1, bar - 1)]
      out[#out + 1] = string.sub(member, bar + 1)
    end
  end
  return out
end
local e = 4 + q_count
local evented_count = tonumber(ARGV[e])
local stream, max_len, evented = nil, nil, nil
local i = e + 1
if evented_count > 0 then
  stream, max_len = ARGV[e + 1], ARGV[e + 2]
  evented = {}
  for k = e + 3, e + 2 + evented_count do
    evented[ARGV[k]] = true
  end
  i = e + 3 + evented_count
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
  emit_event(stream, max_len, nil, fields)
  started_count = started_count + 1
end

i = record_claims(KEYS[1], ready, claims, names, ARGV, i, evented and started)
settle_outbox(KEYS[1], KEYS[2], ARGV, i)

local out = {}
local held = {}
local got = 0
for q = 1, q_count do
  if got >= n then
    break
  end
  local messages = redis.call('RPOP', ready[q], n - got)
  if messages then
    local queue = names[q]
    for _, message in ipairs(messages) do
      got = got + 1
      local token = tostring(base + got)
      held[#held + 1] = token
      held[#held + 1] = queue .. '|' .. message
      out[#out + 1] = token
      out[#out + 1] = q
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
if seq then -- last: a full Redis refuses a first write that adds memory (see README, "A full Redis")
  redis.call('SET', KEYS[3], seq, 'PX', 86400000)
end
return out
