-- Claim content hashes and push their chunks in one step (labelq.queue.publish.ChunkPublisher.enqueue):
-- a session is in the dedupe set only if its chunk is in a queue, so a producer killed at any
-- point, or a Redis outage, leaves no claim without its chunk (and no chunk without its claim).
-- KEYS[1]     the task's set of seen hashes (keyspace.seen)
-- KEYS[2]     this call's reply memo (keyspace.claim_reply): a retry of the same call after a lost
--             reply returns 'ok' instead of finding its own hashes taken
-- KEYS[3]     the task's stats hash (keyspace.stats)
-- KEYS[4..]   one queue list per message (keyspace.queue: kombu's list, new messages on the left)
-- ARGV[1]     n, the number of hashes (distinct; 16 raw bytes each)
-- ARGV[2]     the stats field counting ingested sessions (keyspace.Stat.INGESTED); ARGV[3] the
--             field counting duplicates; ARGV[4] duplicates this batch found (counted here too)
-- ARGV[5 .. 4+n]  the hashes; ARGV[5+n ..] the messages (kombu envelopes), one per KEYS[4..]
-- Returns 'ok' when every hash was claimed, every message pushed and the counts moved; else one
-- character per hash, '1' for those already seen (another producer took them since the caller
-- looked), and nothing is written: the caller rebuilds its chunks without them and calls again.
-- SMISMEMBER and SADD go 1,000 hashes at a time (below Lua's unpack() limit).
local prior = redis.call('GET', KEYS[2])
if prior then return prior end
local n = tonumber(ARGV[1])
local first, last = 5, 4 + n
local flags, taken = {}, false
for i = first, last, 1000 do
  local known = redis.call('SMISMEMBER', KEYS[1], unpack(ARGV, i, math.min(i + 999, last)))
  for k = 1, #known do
    if known[k] == 1 then flags[#flags + 1] = '1'; taken = true else flags[#flags + 1] = '0' end
  end
end
if taken then return table.concat(flags) end
local added = 0  -- counted as ingested: |seen| = ingested holds, and `labelq audit` checks it
for i = first, last, 1000 do
  added = added + redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, last)))
end
for k = 4, #KEYS do
  redis.call('LPUSH', KEYS[k], ARGV[last + k - 3])
end
if added > 0 then redis.call('HINCRBY', KEYS[3], ARGV[2], added) end
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', KEYS[3], ARGV[3], tonumber(ARGV[4])) end
redis.call('SET', KEYS[2], 'ok', 'EX', 3600)
return 'ok'
