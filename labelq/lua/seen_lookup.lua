-- Which content hashes a task's dedupe sets hold, read only (labelq.queue.publish.ChunkPublisher.unseen;
-- the sets and their buckets: labelq.dedupe). enqueue.lua makes the same lookup inside its transaction.
-- KEYS     the sets a lookup checks (labelq.dedupe.DedupeKeys.lookup); one that does not exist costs
--          one EXISTS
-- ARGV     the hashes (16 raw bytes each)
-- Returns one character per hash: '1' when some set holds it, else '0'.
-- SMISMEMBER goes 1,000 hashes at a time (below Lua's unpack() limit).
local flags = {}
for i = 1, #ARGV do flags[i] = '0' end
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    for i = 1, #ARGV, 1000 do
      local known = redis.call('SMISMEMBER', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
      for k = 1, #known do
        if known[k] == 1 then flags[i + k - 1] = '1' end
      end
    end
  end
end
return table.concat(flags)
