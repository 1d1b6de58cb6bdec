-- The routing policy's seed phase: should this session go to the teacher as seed data?
-- (producer.routing.PolicyRouter; state shared by every producer process)
-- KEYS[1]  the task's routing hash (keyspace.routing; fields keyspace.RoutingField:
--          'seeded', 'considered', 'done')
-- KEYS[2]  stratum value -> sessions seeded (keyspace.routing_strata)
-- ARGV[1]  seed size; ARGV[2] this session's stratum ('' without stratification)
-- Returns 1 seed it, 2 not this one (its stratum has its fair share), 0 the seed phase is over.
-- Fair share: no stratum takes more than ceil(seed size / strata seen so far), so rare values
-- are labelled too. The phase also ends after 10x seed size sessions were considered, so a
-- skewed stream cannot keep every producer paying a round trip per session forever.
local total = tonumber(redis.call('HGET', KEYS[1], 'seeded') or '0')
local seen = redis.call('HINCRBY', KEYS[1], 'considered', 1)
if total >= tonumber(ARGV[1]) or seen > tonumber(ARGV[1]) * 10 then
  redis.call('HSET', KEYS[1], 'done', 1)
  return 0
end
local count = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local strata = redis.call('HLEN', KEYS[2])
if count == 0 then strata = strata + 1 end
if count < math.ceil(tonumber(ARGV[1]) / strata) then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('HINCRBY', KEYS[1], 'seeded', 1)
  return 1
end
return 2
