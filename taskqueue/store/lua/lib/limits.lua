-- Rate and concurrency limits (SPEC §11), shared by admit.lua (a worker asks whether a task may start),
-- promote.lua (the timer lets waiting tasks go again) and the settle scripts' limits_settle hook (a task
-- under limits settled). A limit's spec is JSON, written by taskqueue/features/limits.py: {"h": holders zset or absent,
-- "c": concurrency, "r": [[window zset, N, window ms], ...], "x": its released zset, "why": text for
-- `status`}. Times are Redis' own clock (TIME), the same for every host.
--
-- A rate window holds one member per start, scored with the latest time its body may begin (the worker says
-- how late it may be, and does not start the body later than that: worker/execute.py), so a start counts
-- until that time plus the window, and no window as the bodies see it holds more than N starts.
-- FIFO: a limit's waiting list is oldest on the right. A task let go from it goes to the front of its ready
-- list (the oldest of those let go at once in front) and is *released*: it holds a place in the limit's room
-- until it is admitted (or RESERVE_MS passed), so nothing younger takes that place and nothing more is let go
-- for it; if it must wait again after all, it goes back to the oldest end. A task the worker took fresh waits
-- behind the tasks already waiting.
local RECHECK_MS = 2000 -- a task held by concurrency is let go by the holder's release; this is the fallback
local RESERVE_MS = 2000 -- how long a released task's place is kept for it (it is normally taken at once)
local RELEASED_KEPT_MS = 600000 -- how long a released task is still known as released (its place kept)
local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The holders of a concurrency limit whose worker still holds a lease; the others (a worker that died or
-- left with the task unfinished: its task went back to a queue) are dropped.
local function live_holders(holders, workers, now)
  local count = 0
  for _, member in ipairs(redis.call('ZRANGE', holders, 0, -1)) do
    local bar = string.find(member, '|', 1, true)
    local lease = redis.call('ZSCORE', workers, string.sub(member, 1, bar - 1))
    if lease and tonumber(lease) >= now then
      count = count + 1
    else
      redis.call('ZREM', holders, member)
    end
  end
  return count
end
-- Starts left in a rate's window now, and when the next start after those may happen (ms).
local function rate_room(window, n, window_ms, now)
  redis.call('ZREMRANGEBYSCORE', window, '-inf', now - window_ms)
  local used = redis.call('ZCARD', window)
  if used < n then
    local oldest = redis.call('ZRANGE', window, 0, 0, 'WITHSCORES')
    return n - used, (oldest[2] and tonumber(oldest[2]) or now) + window_ms + 1
  end
  local leaving = redis.call('ZRANGE', window, used - n, used - n, 'WITHSCORES')
  return 0, tonumber(leaving[2]) + window_ms + 1
end
-- Released tasks not admitted yet whose place is still kept (older ones are forgotten after a while).
local function reserved(released, now)
  if not released then
    return 0
  end
  redis.call('ZREMRANGEBYSCORE', released, '-inf', now - RELEASED_KEPT_MS)
  return redis.call('ZCOUNT', released, now - RESERVE_MS, '+inf')
end
-- How many tasks of a spec may start now (at most `most`), the released ones on their way counted as started,
-- and when the next one after those may start: the time a used-up rate frees its next start, or, when only
-- concurrency holds them back, a fallback look (its holders' releases let the next one go at once).
local function room_of(spec, workers, now, most)
  local kept = reserved(spec.x, now)
  local room = most
  if spec.c then
    room = math.min(room, spec.c - live_holders(spec.h, workers, now) - kept)
  end
  local frees, nexts = {}, {}
  for i, r in ipairs(spec.r) do
    frees[i], nexts[i] = rate_room(r[1], r[2], r[3], now)
    frees[i] = frees[i] - kept
    room = math.min(room, frees[i])
  end
  room = math.max(room, 0)
  local again = nil
  for i = 1, #frees do
    if frees[i] <= room then
      again = math.max(again or 0, nexts[i])
    end
  end
  return room, again or (now + RECHECK_MS)
end
-- Let go the oldest tasks of a waiting list, as many as may start now (at most `most`): each to the front of
-- its ready list, the oldest ending up in front, released (see above). Returns how many went, how many are
-- left, and when to look at the rest again (ms).
local function release(waiting, spec, workers, prefix, now, most)
  local left = redis.call('LLEN', waiting)
  if left == 0 then
    return 0, 0, now
  end
  local room, again = room_of(spec, workers, now, math.min(left, most))
  if room > 0 then
    local members = redis.call('RPOP', waiting, room) -- oldest first
    for i = #members, 1, -1 do -- the youngest first: each push goes in front of the one before
      local member = members[i]
      local bar = string.find(member, '|', 1, true)
      redis.call('RPUSH', prefix .. string.sub(member, 1, bar - 1), string.sub(member, bar + 1))
      if spec.x then
        redis.call('ZADD', spec.x, now, member)
      end
    end
    if spec.x then
      redis.call('PEXPIRE', spec.x, RELEASED_KEPT_MS)
    end
  end
  return room, left - room, again
end
