-- A task's dedupe claims and their counts, bucket by bucket, read at one moment
-- (labelq.dedupe.claims_not_enqueued): a bucket expiring meanwhile takes its set and its count
-- together. Read only, so Redis serves it at its memory ceiling too (a MULTI it would refuse).
-- KEYS     pairs: a bucket's set (keyspace.seen) and its count (keyspace.seen_count); then the
--          task's set from before buckets (keyspace.seen_legacy)
-- Returns  {claims, count, claims, count, ..., claims in the legacy set}: one SCARD per set and one
--          MGET of the counts
local counts = {}
for i = 2, #KEYS - 1, 2 do
  counts[#counts + 1] = KEYS[i]
end
local got = redis.call('MGET', unpack(counts))
local out = {}
for i = 1, #KEYS - 1, 2 do
  out[#out + 1] = redis.call('SCARD', KEYS[i])
  out[#out + 1] = tonumber(got[(i + 1) / 2] or '0')
end
out[#out + 1] = redis.call('SCARD', KEYS[#KEYS])
return out
