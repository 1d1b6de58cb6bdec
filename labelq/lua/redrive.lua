-- Send dead letters back once: mark them redriven, take them out of the dead-letter counts and put
-- their chunk in the outbox, in one step (labelq.redrive).
-- KEYS[1]  the set of redriven letter ids (keyspace.dlq_redriven)
-- KEYS[2]  the outbox: chunk id -> chunk waiting to be published (keyspace.redrive_outbox)
-- KEYS[3]  the task registry (keyspace.task_registry): the task is added with its counts
-- ARGV[1]  the chunk id; ARGV[2] its outbox entry (JSON: queue and chunk); ARGV[3] the task
-- ARGV[4]  n, the number of letter ids that follow in ARGV[5 .. 4 + n]
-- ARGV[5 + n ..] triples: hash key, field, increment (the dead-letter counters, negative)
-- Returns the ids that were redriven before (then nothing moves: the caller drops them and tries
-- again), or an empty list when every letter was marked, the counters moved and the chunk waits in
-- the outbox. A crash can neither count a letter out twice nor leave its session nowhere: until
-- the chunk is published and removed from the outbox, the audit counts it as in flight.
local n = tonumber(ARGV[4])
local before = {}
for i = 5, 4 + n do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then before[#before + 1] = ARGV[i] end
end
if #before > 0 then return before end
for i = 5, 4 + n do redis.call('SADD', KEYS[1], ARGV[i]) end
for i = 5 + n, #ARGV, 3 do
  redis.call('HINCRBY', ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]))
end
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return before
