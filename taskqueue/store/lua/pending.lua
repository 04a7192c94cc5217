-- What a deployment still has to do, read in one atomic step (taskqueue.testing's drain condition): every
-- move of a message between these places is itself one script, so a snapshot never misses one in transit.
-- KEYS[1] = delayed zset, KEYS[2] = limits' waiting index zset, KEYS[3] = workers zset, KEYS[4..] = ready lists
-- ARGV[1] = in-flight hash prefix ({p}:inflight:), ARGV[2] = horizon (ms from now, Redis' clock): a delayed
-- message due before it counts, a later one does not; ARGV[3] = claim list prefix ({p}:claim:), ARGV[4..] = the
-- queue names of the ready lists (a worker's claim list for queue q is <prefix><worker>:<q>)
-- Returns {delayed due before the horizon, delayed in all, waiting on limits, in flight, ready per list...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZCOUNT', KEYS[1], '-inf', now + tonumber(ARGV[2]))
local delayed = redis.call('ZCARD', KEYS[1])
local waiting = 0
for _, list in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  waiting = waiting + redis.call('LLEN', list)
end
local inflight = 0
for _, worker in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  inflight = inflight + redis.call('HLEN', ARGV[1] .. worker)
  for q = 4, #ARGV do -- what its idle watchers just took and started, not yet in its in-flight hash
    inflight = inflight + redis.call('LLEN', ARGV[3] .. worker .. ':' .. ARGV[q])
  end
end
local out = {due, delayed, waiting, inflight}
for i = 4, #KEYS do
  out[#out + 1] = redis.call('LLEN', KEYS[i])
end
return out
