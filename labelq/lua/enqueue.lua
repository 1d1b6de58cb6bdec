-- The gate of a producer's enqueue (labelq.queue.publish.ChunkPublisher.enqueue): claim content
-- hashes for the chunks pushed just before it, or take the pushes back.
-- It runs inside MULTI/EXEC right after the LPUSHes of the batch's messages, so the claim, the
-- messages and the counts are written together or not at all: a session is in the dedupe set only
-- if its chunk is in a queue, and a producer killed at any point, or a Redis outage, leaves no
-- claim without its chunk (and no chunk without its claim). The messages never enter Lua (Redis
-- hashes every byte of a Lua string: that doubled Redis's CPU per ingested session).
-- KEYS[1]     the task's set of seen hashes (keyspace.seen)
-- KEYS[2]     this call's reply memo (keyspace.claim_reply): a retry of the same call after a lost
--             reply returns 'ok' (and takes back its own second pushes) instead of finding its
--             hashes taken
-- KEYS[3]     the task's stats hash (keyspace.stats)
-- KEYS[4..]   the queue lists pushed to (keyspace.queue: kombu's lists, new messages on the left)
-- ARGV[1]     n, the number of hashes (distinct; 16 raw bytes each)
-- ARGV[2]     the stats field counting ingested sessions (keyspace.Stat.INGESTED); ARGV[3] the
--             field counting duplicates; ARGV[4] duplicates this batch found (counted here too)
-- ARGV[5 .. 4+q]  how many messages were just pushed on each of KEYS[4..] (q lists)
-- ARGV[5+q ..]    the hashes
-- Returns 'ok' when every hash was claimed and the counts moved; else one character per hash, '1'
-- for those already seen (another producer took them since the caller looked): the pushes are
-- taken back (LTRIM: inside the transaction they are the newest entries of each list, and no
-- consumer has seen them) and nothing is written. The caller rebuilds its chunks without those.
-- SMISMEMBER and SADD go 1,000 hashes at a time (below Lua's unpack() limit).
local q = #KEYS - 3
local function take_back()
  for k = 1, q do
    local pushed = tonumber(ARGV[4 + k])
    if pushed > 0 then redis.call('LTRIM', KEYS[3 + k], pushed, -1) end
  end
end
local prior = redis.call('GET', KEYS[2])
if prior then take_back(); return prior end
local n = tonumber(ARGV[1])
local first, last = 5 + q, 4 + q + n
local flags, taken = {}, false
for i = first, last, 1000 do
  local known = redis.call('SMISMEMBER', KEYS[1], unpack(ARGV, i, math.min(i + 999, last)))
  for k = 1, #known do
    if known[k] == 1 then flags[#flags + 1] = '1'; taken = true else flags[#flags + 1] = '0' end
  end
end
if taken then take_back(); return table.concat(flags) end
local added = 0  -- counted as ingested: |seen| = ingested holds, and `labelq audit` checks it
for i = first, last, 1000 do
  added = added + redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, last)))
end
if added > 0 then redis.call('HINCRBY', KEYS[3], ARGV[2], added) end
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', KEYS[3], ARGV[3], tonumber(ARGV[4])) end
redis.call('SET', KEYS[2], 'ok', 'EX', 3600)
return 'ok'
