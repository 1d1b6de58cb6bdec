-- A task's dedupe claims and their counts, bucket by bucket, read at one moment
-- (labelq.dedupe.claims_not_enqueued): a bucket expiring meanwhile takes its set and its count
-- together. Read only, so Redis serves it at its memory ceiling too (a MULTI it would refuse).
-- KEYS     pairs: a bucket's set (keyspace.seen) and its count (keyspace.seen_count); then the
--          task's set from before buckets (keyspace.seen_legacy)
-- Returns  {claims, count, claims, count, ..., claims in the legacy set}
local out = {}
for i = 1, #KEYS - 1, 2 do
  out[#out + 1] = redis.call('SCARD', KEYS[i])
  out[#out + 1] = tonumber(redis.call('GET', KEYS[i + 1]) or '0')
end
out[#out + 1] = redis.call('SCARD', KEYS[#KEYS])
return out
