-- Extend a lock only while its holder still owns it (the trainer's heartbeat).
-- KEYS[1]  the lock (keyspace.train_lock); ARGV[1] the holder's token; ARGV[2] the new TTL in seconds
-- Returns 1 when renewed, 0 when the lock expired or another holder took it.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
