-- Claim content hashes for the producer's dedupe (labelq.queue.publish.ChunkPublisher.claim).
-- KEYS[1]  the task's set of seen hashes (keyspace.seen)
-- KEYS[2]  this call's reply memo (keyspace.claim_reply): a retry of the same call after a lost
--          reply returns the first answer instead of calling its own sessions duplicates
-- ARGV     the hashes (16 raw bytes each), at most ~4,000 (Lua's unpack() limit)
-- Returns one character per hash: '1' claimed now, '0' seen before (in the set, or earlier in
-- this same call). Two commands for the whole batch, not one SADD each: per-hash round trips
-- made Redis the producer's bottleneck.
local prior = redis.call('GET', KEYS[2])
if prior then return prior end
local known = redis.call('SMISMEMBER', KEYS[1], unpack(ARGV))
local out, here = {}, {}
for i, h in ipairs(ARGV) do
  if known[i] == 1 or here[h] then out[i] = '0' else out[i] = '1'; here[h] = true end
end
redis.call('SADD', KEYS[1], unpack(ARGV))
local reply = table.concat(out)
redis.call('SET', KEYS[2], reply, 'EX', 3600)
return reply
