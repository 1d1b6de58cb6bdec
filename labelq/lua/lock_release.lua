-- Release a lock only if its holder still owns it (never another trainer's lock taken after expiry).
-- KEYS[1]  the lock (keyspace.train_lock); ARGV[1] the holder's token
-- Returns 1 when released, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
