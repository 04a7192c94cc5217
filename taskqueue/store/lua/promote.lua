-- Move due delayed messages to the front of their ready lists.
-- KEYS[1] = delayed zset
-- ARGV[1] = now (ms), ARGV[2] = most to move, ARGV[3] = ready-list key prefix ({p}:queue:)
-- Returns {moved, due time (ms) of the next delayed message or -1}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local bar = string.find(member, '|', 1, true)
  redis.call('RPUSH', ARGV[3] .. string.sub(member, 1, bar - 1), string.sub(member, bar + 1))
end
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, head[2] or '-1'}
