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
-- Returns a flat array: token, queue index (1-based, into KEYS[3..]), message, token, ...
local n = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local i = settle_outbox(KEYS[1], KEYS[2], ARGV, 3)
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
