-- Move a producer batch's counters once, even when the call is retried after a lost reply
-- (labelq.queue.publish.ChunkPublisher.count).
-- KEYS[1]  the task's stats hash (keyspace.stats)
-- KEYS[2]  this call's marker (keyspace.count_reply), kept an hour
-- ARGV     pairs: field (keyspace.Stat), increment
-- Returns 1 when this call counted, 0 when it had counted before.
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', 3600) == false then return 0 end
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1]))
end
return 1
