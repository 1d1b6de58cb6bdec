-- The gate of a producer's enqueue (labelq.queue.publish.ChunkPublisher.enqueue): claim content
-- hashes for the chunks pushed just before it, or take the pushes back.
-- It runs inside MULTI/EXEC right after the LPUSHes of the batch's messages, so the claim, the
-- messages and the counts are written together or not at all: a session is in the dedupe sets only
-- if its chunk is in a queue, and a producer killed at any point, or a Redis outage, leaves no
-- claim without its chunk (and no chunk without its claim). The messages never enter Lua (Redis
-- hashes every byte of a Lua string: that doubled Redis's CPU per ingested session).
-- Dedupe holds within a window: one set per task per bucket of time, each expiring whole
-- (labelq.dedupe); a hash is looked up in every live set and claimed in the current one.
-- KEYS[1]     this call's reply memo (keyspace.claim_reply): a retry of the same call after a lost
--             reply returns 'ok' (and takes back its own second pushes) instead of finding its
--             hashes taken
-- KEYS[2]     the task's stats hash (keyspace.stats)
-- KEYS[3]     the current bucket's set (keyspace.seen), where the hashes are claimed
-- KEYS[4]     its count of claims (keyspace.seen_count): the audit compares it with the set
-- KEYS[5]     the task's set from before buckets (keyspace.seen_legacy): looked up, and given a TTL
--             of ARGV[6] seconds when it has none (by a producer's enqueue: one with hashes)
-- KEYS[6 .. 5+b]  the other sets a lookup checks (older live buckets, the next one)
-- KEYS[6+b ..]    the queue lists pushed to (keyspace.queue: kombu's lists, new messages on the left)
-- ARGV[1]     n, the number of hashes (distinct; 16 raw bytes each)
-- ARGV[2]     the stats field counting ingested sessions (keyspace.Stat.INGESTED); ARGV[3] the
--             field counting duplicates; ARGV[4] duplicates this batch found (counted here too)
-- ARGV[5]     unix time the current bucket's set and count expire (EXPIREAT)
-- ARGV[6]     the legacy set's TTL in seconds (one window); ARGV[7] b
-- ARGV[8 .. 7+q]  how many messages were just pushed on each of the q queue lists
-- ARGV[8+q ..]    the hashes
-- Returns 'ok' when every hash was claimed and the counts moved; else one character per hash, '1'
-- for those already seen (another producer took them since the caller looked): the pushes are
-- taken back (LTRIM: inside the transaction they are the newest entries of each list, and no
-- consumer has seen them) and nothing is written. The caller rebuilds its chunks without those.
-- SMISMEMBER and SADD go 1,000 hashes at a time (below Lua's unpack() limit).
local b = tonumber(ARGV[7])
local q = #KEYS - 5 - b
local function take_back()
  for k = 1, q do
    local pushed = tonumber(ARGV[7 + k])
    if pushed > 0 then redis.call('LTRIM', KEYS[5 + b + k], pushed, -1) end
  end
end
local prior = redis.call('GET', KEYS[1])
if prior then take_back(); return prior end
local n = tonumber(ARGV[1])
local first, last = 8 + q, 7 + q + n
local flags, taken = {}, false
for i = 1, n do flags[i] = '0' end
local lookup = {}  -- a worker's republish claims nothing (n = 0): no set to look in
if n > 0 then
  lookup = {KEYS[3], KEYS[5]}
  for k = 6, 5 + b do lookup[#lookup + 1] = KEYS[k] end
end
for _, key in ipairs(lookup) do
  if redis.call('EXISTS', key) == 1 then
    for i = first, last, 1000 do
      local known = redis.call('SMISMEMBER', key, unpack(ARGV, i, math.min(i + 999, last)))
      for k = 1, #known do
        if known[k] == 1 then flags[i - first + k] = '1'; taken = true end
      end
    end
  end
end
if taken then take_back(); return table.concat(flags) end
local added = 0  -- counted as ingested, and in the bucket's count: the audit checks both
for i = first, last, 1000 do
  added = added + redis.call('SADD', KEYS[3], unpack(ARGV, i, math.min(i + 999, last)))
end
if added > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], added)
  redis.call('INCRBY', KEYS[4], added)
  redis.call('EXPIREAT', KEYS[3], ARGV[5])
  redis.call('EXPIREAT', KEYS[4], ARGV[5])
end
if n > 0 and redis.call('TTL', KEYS[5]) == -1 then redis.call('EXPIRE', KEYS[5], ARGV[6]) end
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', KEYS[2], ARGV[3], tonumber(ARGV[4])) end
redis.call('SET', KEYS[1], 'ok', 'EX', 3600)
return 'ok'
