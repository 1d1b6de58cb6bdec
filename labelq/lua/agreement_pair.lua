-- One half of the student-teacher pairs of a chunk (labelq.agreement.offer): the teacher's label of a
-- sampled session, or the serving student's shadow label of it. Whichever half comes second takes the
-- other out and the pair is gone, so each pair is scored once, by one caller, whatever the order of
-- the two workers; a half whose other never comes expires.
-- KEYS[i]     the session's pair hash (keyspace.agreement_pair), one per session
-- ARGV[1]     this half's field (keyspace.PairField), ARGV[2] the other half's field
-- ARGV[3]     the TTL of a waiting half in seconds (agreement_pair_ttl_s)
-- ARGV[3 + i] this half of session i (JSON)
-- Returns, per session, the other half (JSON) when it was there, else '' (this half now waits).
local found = {}
for i, key in ipairs(KEYS) do
  local other = redis.call('HGET', key, ARGV[2])
  if other then
    redis.call('DEL', key)
    found[i] = other
  else
    redis.call('HSET', key, ARGV[1], ARGV[3 + i])
    redis.call('EXPIRE', key, ARGV[3])
    found[i] = ''
  end
end
return found
