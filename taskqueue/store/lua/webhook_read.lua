-- One webhook's next events (SPEC §13), read through its consumer group once what it lost is counted: events
-- trimmed from the stream before the group read them (the stream reached events.max_backlog while the webhook
-- lagged, or something else trimmed it: a producer with another config, an operator's XTRIM). Counted here,
-- atomically with the read, because the first read past such a gap hides it (Redis then counts the group's
-- reads on from where it was). Redis >= 7 only: 6.2 keeps no read counters, so there a gap is not counted.
-- KEYS[1] = events stream, KEYS[2] = stats hash
-- ARGV[1] = consumer group, ARGV[2] = consumer, ARGV[3] = most entries read, ARGV[4] = stats field of the lost
-- Returns {lost, entries, last delivered id}: entries as XREADGROUP gives them for one stream.
local stream, group = KEYS[1], ARGV[1]
local lost = 0
local stream_info = fields_of(redis.call('XINFO', 'STREAM', stream))
local added, length = stream_info['entries-added'], stream_info['length']
local last = '0-0'
for _, reply in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = fields_of(reply)
  if info['name'] == group then
    last = info['last-delivered-id']
    local read = info['entries-read']
    local trimmed = added and (added - length) -- entries ever trimmed away (none is ever deleted otherwise)
    if read and trimmed and read < trimmed and length > 0 and id_before(last, stream_info['first-entry'][1]) then
      lost = trimmed - read
      redis.call('XGROUP', 'SETID', stream, group, last, 'ENTRIESREAD', trimmed) -- the next read counts right
      redis.call('HINCRBY', KEYS[2], ARGV[4], lost)
    end
  end
end
local reply = redis.call('XREADGROUP', 'GROUP', group, ARGV[2], 'COUNT', ARGV[3], 'STREAMS', stream, '>')
local entries = {}
if reply then
  entries = reply[1][2]
  last = entries[#entries][1]
end
return { lost, entries, last }
