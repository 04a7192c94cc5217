-- Start a workflow (taskqueue/canvas.py lays it out, store/producer.py builds this call): write its hash
-- and push its entry steps, at once. Steps that wait for others are pushed later, by the settle script
-- of the step they wait for (lua/hooks/workflow.lua).
-- KEYS[1] = the workflow's hash ({p}:workflow:<id>), KEYS[2] = stats hash (counts workflows:started)
-- ARGV[1] = ready-list key prefix ({p}:queue:), ARGV[2] = F, number of field/value pairs; then those pairs
-- then E, number of entry steps; then E pairs of queue name and message
-- Returns 1, or 0 when a workflow with this id exists already (nothing is written).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local last = 2 + 2 * tonumber(ARGV[2])
local i = 3
while i <= last do
  local j = math.min(i + 999, last) -- 1,000 arguments (500 pairs) per HSET: inside unpack()'s limit
  redis.call('HSET', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
local entries = tonumber(ARGV[i])
i = i + 1
for _ = 1, entries do
  redis.call('LPUSH', ARGV[1] .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HINCRBY', KEYS[2], 'workflows:started', 1)
return 1
