-- May this task start now under its limits (SPEC §11)? Admitted: its start is counted in each rate's window
-- (until the latest time its body may begin, now + ARGV[11] ms, plus the window) and it becomes a holder of its
-- concurrency limit. Not yet: it leaves this worker's in-flight hash for its limit's waiting list (no slot kept,
-- no attempt counted) and the waiting index says when to look again. A task the worker took fresh also waits
-- while older ones wait on the same limit (FIFO); one released from the waiting list (lua/lib/limits.lua) that
-- must wait again goes back to the oldest end.
-- KEYS[1] = this worker's in-flight hash, KEYS[2] = stats hash
-- ARGV[1] = token, ARGV[2] = holder member ("<worker>|<token>"), ARGV[3] = workers zset,
-- ARGV[4] = waiting list, ARGV[5] = waiting index zset, ARGV[6] = specs hash, ARGV[7] = spec (JSON),
-- ARGV[8] = the message as its in-flight member ("<queue>|<message>"), ARGV[9] = stats field counting waits,
-- ARGV[10] = the delayed-task timer's wake channel, ARGV[11] = how late (ms) the body may begin after now,
-- ARGV[12] = "" or the time (ms) of this holder's earlier admission whose body did not begin in time: undone
-- first (it keeps its place).
-- Returns {1, now (ms)} admitted, {0, start not before (ms), why} waiting, {-1} no longer held (recovered elsewhere).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {-1}
end
local spec = cjson.decode(ARGV[7])
local now = clock_ms()
local again_admitted = ARGV[12] ~= ''
if again_admitted then
  for _, r in ipairs(spec.r) do
    redis.call('ZREM', r[1], ARGV[2] .. ':' .. ARGV[12])
  end
  if spec.c then
    redis.call('ZREM', spec.h, ARGV[2])
  end
end
local released = again_admitted or (spec.x and redis.call('ZREM', spec.x, ARGV[8]) == 1)
local room, again = room_of(spec, ARGV[3], now, 1)
if room > 0 and (released or redis.call('LLEN', ARGV[4]) == 0) then
  local latest = now + tonumber(ARGV[11]) + 1 -- +1: TIME is cut to the ms
  for _, r in ipairs(spec.r) do
    redis.call('ZADD', r[1], latest, ARGV[2] .. ':' .. now)
    redis.call('PEXPIRE', r[1], r[3] + latest - now + 1000)
  end
  if spec.c then
    redis.call('ZADD', spec.h, now, ARGV[2])
  end
  return {1, now}
end
if room > 0 then
  again = now -- room, but older tasks wait: the timer lets them go first, now
end
redis.call('HDEL', KEYS[1], ARGV[1])
if released then
  redis.call('RPUSH', ARGV[4], ARGV[8])
else
  redis.call('LPUSH', ARGV[4], ARGV[8])
end
local head = redis.call('ZRANGE', ARGV[5], 0, 0, 'WITHSCORES')
redis.call('ZADD', ARGV[5], 'LT', again, ARGV[4])
redis.call('HSET', ARGV[6], ARGV[4], ARGV[7])
redis.call('HINCRBY', KEYS[2], ARGV[9], 1)
if not head[2] or again < tonumber(head[2]) then
  redis.call('PUBLISH', ARGV[10], again)
end
return {0, again, spec.why}
