-- Park a chunk message a worker holds: take it out of kombu's unacknowledged messages and put it on
-- its task's parked list, in one step, unless what it waits for is already there
-- (labelq.queue.parking.park).
-- KEYS[1]  kombu's unacked hash (keyspace.unacked): delivery tag -> [message, exchange, routing key]
-- KEYS[2]  kombu's unacked index (keyspace.unacked_index): delivery tag -> delivery time
-- KEYS[3]  the parked list (keyspace.parked), newest on the left like kombu's queues
-- KEYS[4..] keys any one of which means the chunk can be served (a task's adapter pointers):
--          whoever creates one moves the parked list back, after creating it
-- ARGV[1]  the delivery tag; ARGV[2] the message, as kombu pushes it on a queue
-- Returns 1 parked (the worker's ack that follows finds nothing left to remove), 2 not parked: one
-- of KEYS[4..] exists (serve it now), 0 not parked: the tag is not unacknowledged (kombu restored the
-- message meanwhile). Checking KEYS[4..] here closes the race with a promotion: either the park
-- comes first and the promotion's unpark moves the chunk back, or the park sees the adapter.
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 2 end
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
