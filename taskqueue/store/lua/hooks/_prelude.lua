-- The settle scripts (exchange, retire, retry, bury) start with this (and record_claims, settle_outbox below), then every lua/hooks/<name>.lua:
-- each fragment adds `hooks.<name> = function(argv, i) ... return next_i end`, which applies one effect
-- whose arguments start at argv[i]. A settle script calls apply_effects(ARGV, i) where ARGV[i] is the
-- number of effects, each given as its hook name and then its own arguments; it returns the index after.
-- skip_effects(ARGV, i) steps over such a block without applying it: every fragment sets
-- `arity.<name>` to its fixed argument count, or to -1 when its first argument counts the rest.
local hooks = {}
local arity = {}
local function apply_effects(argv, i)
  local count = tonumber(argv[i])
  i = i + 1
  for _ = 1, count do
    local hook = hooks[argv[i]]
    if hook == nil then
      error('taskqueue: unknown effect ' .. tostring(argv[i]))
    end
    i = hook(argv, i + 1)
  end
  return i
end
local function skip_effects(argv, i)
  local count = tonumber(argv[i])
  i = i + 1
  for _ = 1, count do
    local n = arity[argv[i]]
    if n == nil then
      error('taskqueue: effect without arity ' .. tostring(argv[i]))
    elseif n < 0 then
      n = 1 + tonumber(argv[i + 1]) -- a variable count: its first argument says how many follow
    end
    i = i + 1 + n
  end
  return i
end

-- The Q ready lists, claim lists and queue names of a script that takes them as KEYS[k+1 .. k+Q] (ready lists,
-- highest priority first), KEYS[k+Q+1 .. k+2Q] (this worker's claim lists, in the same order) and
-- ARGV[a+1 .. a+Q] (their queue names).
local function queues_of(k, a, q_count)
  local ready, claims, names = {}, {}, {}
  for q = 1, q_count do
    ready[q] = KEYS[k + q]
    claims[q] = KEYS[k + q_count + q]
    names[q] = ARGV[a + q]
  end
  return ready, claims, names
end

-- A worker's claims, as exchange.lua and retire.lua receive them, starting at argv[i]: messages its idle
-- watchers moved with BLMOVE from a ready list into the worker's claim list for that queue and started at
-- once (worker.py), so an idle worker starts a task one round trip after it was pushed, not two.
-- K, then K times a token, a queue number (1-based, into `ready`, `claims` and `names`) and the message:
-- each one still in its claim list moves into the in-flight hash under its token (`on_claim(queue name,
-- message)` is called for it); one no longer there was handed back meanwhile and runs elsewhere too.
-- Then U, and U times a queue number and a message: taken with no slot free, back to the front of its ready
-- list. They come before the outbox, so a claimed task that finished already settles in the same call.
-- Returns the index after them.
local function record_claims(inflight, ready, claims, names, argv, i, on_claim)
  local k = tonumber(argv[i])
  i = i + 1
  for _ = 1, k do
    local q = tonumber(argv[i + 1])
    if redis.call('LREM', claims[q], 1, argv[i + 2]) == 1 then
      redis.call('HSET', inflight, argv[i], names[q] .. '|' .. argv[i + 2])
      if on_claim then
        on_claim(names[q], argv[i + 2])
      end
    end
    i = i + 3
  end
  local u = tonumber(argv[i])
  i = i + 1
  for _ = 1, u do
    local q = tonumber(argv[i])
    if redis.call('LREM', claims[q], 1, argv[i + 1]) == 1 then
      redis.call('RPUSH', ready[q], argv[i + 1])
    end
    i = i + 2
  end
  return i
end

-- The outbox of a worker, as exchange.lua and retire.lua receive it, starting at argv[i]:
-- A, then A tokens to acknowledge (one HDEL for all); C, then C pairs of stats field and increment;
-- B, then B times a token and its effects, applied only when the token was still held (a task
-- recovered meanwhile is not settled twice). Returns the index after it.
-- The counters are added last: Redis at maxmemory refuses a script's first write if it may add memory, and the
-- HDELs free some, so a full Redis still lets settling through (README, "A full Redis").
local function settle_outbox(inflight, stats, argv, i)
  local acks = tonumber(argv[i])
  i = i + 1
  if acks > 0 then
    redis.call('HDEL', inflight, unpack(argv, i, i + acks - 1))
  end
  i = i + acks
  local counted = i
  i = i + 1 + 2 * tonumber(argv[i])
  local hooked = tonumber(argv[i])
  i = i + 1
  for _ = 1, hooked do
    if redis.call('HDEL', inflight, argv[i]) == 1 then
      i = apply_effects(argv, i + 1)
    else
      i = skip_effects(argv, i + 1)
    end
  end
  for c = counted + 1, counted + 2 * tonumber(argv[counted]), 2 do
    redis.call('HINCRBY', stats, argv[c], argv[c + 1])
  end
  return i
end

-- Lifecycle events (SPEC §13; taskqueue/features/events.py): append one entry to the events stream, trimmed to
-- about `maxlen` entries, stamped `at` with Redis' own clock (ms), and count it in stats field events:<event>
-- of hash `stats`.
-- `fields` is a flat array of field names and values that starts with 'event', <its name>. Redis' clock is
-- read once per script: its events all happen at the same moment (the script is atomic).
local event_at = nil
local function emit_event(stream, maxlen, stats, fields)
  if event_at == nil then
    local now = redis.call('TIME')
    event_at = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
  end
  fields[#fields + 1] = 'at'
  fields[#fields + 1] = event_at
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  if stats then -- nil: the caller counts its events itself, once (exchange.lua's `started`)
    redis.call('HINCRBY', stats, 'events:' .. fields[2], 1)
  end
end
