-- Rate and concurrency limits (SPEC §11), shared by admit.lua (a worker asks whether a task may start)
-- and promote.lua (the timer lets waiting tasks go again). A limit's spec is JSON, written by
-- taskqueue/features/limits.py: {"h": holders zset or absent, "c": concurrency, "r": [[window zset, N,
-- window ms], ...], "why": text for `status`}. Times are Redis' own clock (TIME), the same for every host.
local RECHECK_MS = 2000 -- a task held by concurrency is let go by the holder's release; this is the fallback
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
-- How many tasks of a spec may start now (at most `most`), and when the next one after those may start:
-- the time a used-up rate frees its next start, or, when only concurrency holds them back, a fallback
-- look (its holders' releases let the next one go at once).
local function room_of(spec, workers, now, most)
  local room = most
  if spec.c then
    room = math.min(room, spec.c - live_holders(spec.h, workers, now))
  end
  local frees, nexts = {}, {}
  for i, r in ipairs(spec.r) do
    frees[i], nexts[i] = rate_room(r[1], r[2], r[3], now)
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
