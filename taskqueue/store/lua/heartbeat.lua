-- A worker renews its lease: its score in the workers zset and its info hash, which expires with the lease.
-- KEYS[1] = workers zset, KEYS[2] = its info hash
-- ARGV[1] = worker id, ARGV[2] = lease end (ms), ARGV[3] = lease (ms), then the info's field/value pairs
-- PEXPIRE comes first: it adds no memory, and Redis at maxmemory refuses a script's write only while the script
-- has written nothing yet. So a full Redis (an outage of writes) does not make live workers look dead and be
-- recovered, re-running what they finished; what this writes is the same few bytes each time.
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
