-- Count a chunk's committed output once, however often the chunk runs (labelq.records.commit_chunk).
-- KEYS[1]  the chunk's done marker (keyspace.chunk_done)
-- KEYS[2]  the task registry (keyspace.task_registry): the task is added with its first counts
-- ARGV[1]  the marker's TTL in seconds; ARGV[2] the task
-- ARGV[3..] triples: hash key, field, increment (stats and dead-letter counters)
-- Returns 1 when this call counted, 0 when the chunk was committed before (nothing moves).
-- The marker and the counters move in one step, so a crash can never count half a chunk.
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
for i = 3, #ARGV, 3 do
  redis.call('HINCRBY', ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]))
end
return 1
