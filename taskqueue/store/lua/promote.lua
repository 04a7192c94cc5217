-- Move due delayed messages to the front of their ready lists; then let go the tasks waiting on limits
-- whose budget has room again (lua/lib/limits.lua: release), oldest first, as many as may start.
-- KEYS[1] = delayed zset
-- ARGV[1] = now (ms), ARGV[2] = most to move, ARGV[3] = ready-list key prefix ({p}:queue:)
-- ARGV[4] = limits' waiting index zset, ARGV[5] = their specs hash, ARGV[6] = workers zset
-- Returns {moved, due time (ms) of the next delayed message or waiting look, or -1}.
local most = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, most)
for _, member in ipairs(due) do
  local bar = string.find(member, '|', 1, true)
  redis.call('RPUSH', ARGV[3] .. string.sub(member, 1, bar - 1), string.sub(member, bar + 1))
end
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
local moved = #due
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = head[2] and tonumber(head[2]) or -1
if redis.call('EXISTS', ARGV[4]) == 1 then -- some task waits on a limit (one command a tick when none does)
  local now = clock_ms()
  for _, waiting in ipairs(redis.call('ZRANGEBYSCORE', ARGV[4], '-inf', now, 'LIMIT', 0, 100)) do
    local raw = redis.call('HGET', ARGV[5], waiting)
    local went, left, again = 0, redis.call('LLEN', waiting), now + RECHECK_MS
    if raw then
      went, left, again = release(waiting, cjson.decode(raw), ARGV[6], ARGV[3], now, math.max(most - moved, 1))
    end
    moved = moved + went
    if left == 0 then
      redis.call('ZREM', ARGV[4], waiting)
    else
      redis.call('ZADD', ARGV[4], again, waiting)
    end
  end
  local look = redis.call('ZRANGE', ARGV[4], 0, 0, 'WITHSCORES')
  if look[2] and (next_due < 0 or tonumber(look[2]) < next_due) then
    next_due = tonumber(look[2])
  end
end
return {moved, tostring(next_due)}
