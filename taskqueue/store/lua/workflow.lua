-- Start a workflow (taskqueue/canvas.py lays it out, store/producer.py builds this call): write its hash
-- and push its entry steps, at once (wf_start_at in lua/hooks/workflow.lua, which a worker also applies
-- when it acknowledges a message naming a YAML workflow). Steps that wait for others are pushed later, by
-- the settle script of the step they wait for.
-- KEYS[1] = the workflow's hash ({p}:workflow:<id>), KEYS[2] = stats hash (counts workflows:started),
-- KEYS[3] = the index of recent workflows ({p}:workflows)
-- ARGV = wf_start's arguments: N; its hash key, stats hash, index zset ({p}:workflows), ready-list key
-- prefix ({p}:queue:), its id, start time (ms), F and F field/value pairs, E and E pairs of queue and message
-- Returns 1, or 0 when a workflow with this id exists already (nothing is written).
local started = wf_start_at(ARGV, 1)
return started
