-- Hand an in-flight message back to the front of its ready list (shutdown, lost worker).
-- KEYS[1] = in-flight hash holding it, KEYS[2] = ready list
-- ARGV[1] = token, ARGV[2] = message to put back (may differ: attempt counted on recovery)
-- Returns 1, or 0 when the token was no longer held (someone else settled it).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
