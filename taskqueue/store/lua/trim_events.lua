-- Trim the events stream to about events.max_len entries (SPEC §13), but never past an event a webhook has not
-- finished with: its group's oldest pending event (read, not yet acknowledged) and any after its last
-- delivered one. Run by the runners when webhooks are configured (the scripts that write events then trim
-- only at events.max_backlog, the memory bound; webhook_read.lua counts what a webhook loses there).
-- At most ARGV[2] entries go per call: the caller calls again when that many went.
-- KEYS[1] = events stream
-- ARGV[1] = max_len, ARGV[2] = most entries trimmed per call, ARGV[3..] = the webhooks' consumer groups
-- Returns {trimmed, held}: how many entries went; held = 1 when a webhook held the trim back, else 0.
local stream = KEYS[1]
local excess = redis.call('XLEN', stream) - tonumber(ARGV[1])
if excess <= 0 then
  return { 0, 0 }
end
local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(excess, tonumber(ARGV[2])) + 1)
local cut = oldest[#oldest][1] -- MINID keeps it: the entry after the last one that may go
local webhooks = {}
for i = 3, #ARGV do
  webhooks[ARGV[i]] = true
end
local held = 0
for _, reply in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = fields_of(reply)
  if webhooks[info['name']] then
    local floor = info['last-delivered-id']
    if info['pending'] > 0 then
      local oldest_pending = redis.call('XPENDING', stream, info['name'])[2]
      if id_before(oldest_pending, floor) then
        floor = oldest_pending
      end
    end
    if id_before(floor, cut) then
      cut, held = floor, 1
    end
  end
end
return { redis.call('XTRIM', stream, 'MINID', cut), held }
