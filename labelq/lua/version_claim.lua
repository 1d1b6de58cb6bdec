-- Hand out the next adapter version of a task (labelq.registry.Registry.claim_version).
-- KEYS[1]  the task's version counter (keyspace.adapter_counter)
-- ARGV[1]  the floor: the highest version the store holds (claimed, written or complete)
-- Returns the version to claim. The counter is first raised to the floor, so a counter lost with
-- Redis (or behind a store restored elsewhere) resumes above every version ever claimed; two callers
-- always get two numbers. The store's create-if-absent claim object stays the final word.
local floor = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') < floor then redis.call('SET', KEYS[1], floor) end
return redis.call('INCR', KEYS[1])
