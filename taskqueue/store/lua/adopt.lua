-- Recovering a dead worker, first step: what its watchers had claimed (moved into its claim lists and maybe
-- started) joins its in-flight hash, so recovery counts the lost attempt and re-queues or dead-letters it
-- like any other message the worker held.
-- KEYS[1] = its in-flight hash, KEYS[2..] = its claim lists; ARGV[1..] = their queue names, in the same order
-- Returns the number of messages adopted.
local adopted = 0
local n = redis.call('HLEN', KEYS[1])
local lists = {}
for k = 2, #KEYS do
  lists[k] = redis.call('LRANGE', KEYS[k], 0, -1)
end
-- the deletion first: Redis at maxmemory refuses a script's first write only if it may add memory
redis.call('DEL', unpack(KEYS, 2))
for k = 2, #KEYS do
  for _, message in ipairs(lists[k]) do
    repeat
      n = n + 1
    until redis.call('HSETNX', KEYS[1], 'claim-' .. n, ARGV[k - 1] .. '|' .. message) == 1
    adopted = adopted + 1
  end
end
return adopted
