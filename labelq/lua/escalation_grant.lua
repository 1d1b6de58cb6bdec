-- How many of a chunk's doubtful labels may go to the teacher (workers.student.escalation.grant).
-- KEYS[1]  the chunk's decision (keyspace.escalation_decision): a redelivered chunk gets the same
--          answer, so a session is never both escalated and kept
-- KEYS[2]  the task's escalation hash (keyspace.escalation; fields keyspace.EscalationField:
--          'seen', 'granted')
-- ARGV[1]  sessions in this chunk; ARGV[2] candidates; ARGV[3] share; ARGV[4] the decision's TTL
-- Returns the number granted. The bound is global per task and atomic across workers:
-- granted <= floor(share x sessions seen), and never more than this chunk's candidates.
local decided = redis.call('GET', KEYS[1])
if decided then return tonumber(decided) end
local seen = redis.call('HINCRBY', KEYS[2], 'seen', ARGV[1])
local granted = tonumber(redis.call('HGET', KEYS[2], 'granted') or '0')
local allow = math.floor(seen * tonumber(ARGV[3]) + 1e-9) - granted
if allow < 0 then allow = 0 end
if allow > tonumber(ARGV[2]) then allow = tonumber(ARGV[2]) end
redis.call('HINCRBY', KEYS[2], 'granted', allow)
redis.call('SET', KEYS[1], allow, 'EX', ARGV[4])
return allow
