-- Stream ids and XINFO replies (the events stream's webhook scripts: webhook_read.lua, trim_events.lua).
-- id_before(a, b): stream id a ('<ms>-<seq>') comes before b. fields_of(reply): a flat XINFO reply as a table.
local function id_before(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if a_ms ~= b_ms then
    return tonumber(a_ms) < tonumber(b_ms)
  end
  return tonumber(a_seq) < tonumber(b_seq)
end

local function fields_of(reply)
  local found = {}
  for i = 1, #reply, 2 do
    found[reply[i]] = reply[i + 1]
  end
  return found
end
