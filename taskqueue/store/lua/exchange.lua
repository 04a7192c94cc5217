-- A worker's one round trip: settle finished tasks, count them, and take up to N new ones.
-- Strict priority: a lower queue is read only when every higher one is empty.
-- KEYS[1] = this worker's in-flight hash ({p}:inflight:<worker>)
-- KEYS[2] = stats hash ({p}:stats)
-- KEYS[3..] = ready lists, highest priority first
-- ARGV[1] = N, most messages to take (free slots)
-- ARGV[2] = token base: taken messages get tokens base+1 .. base+n
-- ARGV[3] = A, number of tokens to acknowledge; ARGV[4 .. 3+A] = those tokens
-- ARGV[4+A] = C, number of counters; then C pairs of stats field and increment
-- then B, number of acks that carry effects; then B times: token, then its effects (see _prelude.lua),
-- applied only when the token was still held (a task recovered meanwhile is not settled twice)
-- then one queue name per ready list in KEYS[3..], in the same order
-- Returns a flat array: token, queue index (1-based, into KEYS[3..]), message, token, ...
local n = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local acks = tonumber(ARGV[3])
local i = 4
if acks > 0 then
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, i + acks - 1))
end
i = i + acks
local counters = tonumber(ARGV[i])
i = i + 1
for _ = 1, counters do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local hooked = tonumber(ARGV[i])
i = i + 1
for _ = 1, hooked do
  local held_it = redis.call('HDEL', KEYS[1], ARGV[i]) == 1
  if held_it then
    i = apply_effects(ARGV, i + 1)
  else
    i = skip_effects(ARGV, i + 1)
  end
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
    end
  end
end
if got > 0 then
  redis.call('HSET', KEYS[1], unpack(held))
end
return out
