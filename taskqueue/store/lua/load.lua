-- The work waiting for and held by the deployment, per queue, and its live workers' slots: what the load
-- figure (/tasks/load, taskqueue_load) divides. Read-only; run when asked (a scrape), never per task.
-- KEYS[1] = delayed zset ({p}:delayed), KEYS[2] = workers zset ({p}:workers)
-- ARGV[1] = now (ms), ARGV[2] = most due delayed members to read for their queue (the rest are counted only)
-- ARGV[3] = ready-list key prefix ({p}:queue:), ARGV[4] = worker info prefix ({p}:worker:),
-- ARGV[5] = in-flight hash prefix ({p}:inflight:), ARGV[6] = claim list prefix ({p}:claim:)
-- ARGV[7 ..] = the declared queue names
-- Returns {live workers, their slots, due delayed not read, then per queue: ready, due delayed, running}.
local names = {}
local index = {}
for i = 7, #ARGV do
  names[#names + 1] = ARGV[i]
  index[ARGV[i]] = #names
end
local ready, due, running = {}, {}, {}
for q, name in ipairs(names) do
  ready[q] = redis.call('LLEN', ARGV[3] .. name)
  due[q], running[q] = 0, 0
end
local function queue_of(member)
  local bar = string.find(member, '|', 1, true)
  return bar and index[string.sub(member, 1, bar - 1)]
end
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(members) do
  local q = queue_of(member)
  if q then
    due[q] = due[q] + 1
  end
end
local unread = 0
if #members == tonumber(ARGV[2]) then
  unread = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1]) - #members
end
local workers = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')
local slots = 0
for _, worker in ipairs(workers) do
  slots = slots + (tonumber(redis.call('HGET', ARGV[4] .. worker, 'slots')) or 0)
  for _, member in ipairs(redis.call('HVALS', ARGV[5] .. worker)) do
    local q = queue_of(member)
    if q then
      running[q] = running[q] + 1
    end
  end
  for q, name in ipairs(names) do -- started by an idle worker's watcher, not yet in its in-flight hash
    running[q] = running[q] + redis.call('LLEN', ARGV[6] .. worker .. ':' .. name)
  end
end
local out = {#workers, slots, unread}
for q = 1, #names do
  out[#out + 1] = ready[q]
  out[#out + 1] = due[q]
  out[#out + 1] = running[q]
end
return out
