-- Move parked chunk messages back to their queue (labelq.queue.parking.unpark).
-- KEYS[1]  the parked list (keyspace.parked), newest on the left
-- KEYS[2]  the queue (keyspace.queue: kombu's list; consumers pop on the right)
-- ARGV[1]  the most messages to move in this call (the caller repeats until 0: Redis never blocks long)
-- Each message goes from the parked list's newest end to the consumers' end of the queue, so the
-- parked messages are taken next, oldest first (they have waited longest), as kombu restores
-- a redelivered message. Returns how many moved.
local moved = 0
for _ = 1, tonumber(ARGV[1]) do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') then break end
  moved = moved + 1
end
return moved
