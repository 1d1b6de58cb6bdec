-- Reserve a call's worst-case cost against a task's hard budget in one period (workers.teacher.budget.Budget).
-- KEYS[1]  totals hash (fields keyspace.BudgetField: 'spent', 'reserved', 'seeded'), integer micro-dollars
-- KEYS[2]  reservation id -> expiry time in ms (zset)
-- KEYS[3]  reservation id -> amount (hash)
-- ARGV[1]  reservation id; ARGV[2] amount; ARGV[3] the cap; ARGV[4] the reservation's lifetime in ms;
-- ARGV[5]  when the three keys expire (unix ms; 0: never, the 'total' period)
-- Returns 1 reserved, 0 refused: spent + reserved + amount would pass the cap, so concurrent
-- workers can never overspend. Returns -1 when the totals were never seeded (no 'seeded': a new
-- period, or Redis lost them): nothing is reserved, the caller starts the totals from the durable
-- record in the store (budget_seed.lua) and asks again, so a flushed Redis never reopens spent money.
-- Expired reservations (a worker killed mid-call) are released first, on Redis's clock, so no
-- worker holds budget forever.
redis.replicate_commands()
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local amount = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  redis.call('HINCRBY', KEYS[1], 'reserved', -amount)
  redis.call('HDEL', KEYS[3], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local amount, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if spent + reserved + amount > limit then return 0 end
redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], amount)
if tonumber(ARGV[5]) > 0 then
  for i = 1, 3 do redis.call('PEXPIREAT', KEYS[i], ARGV[5]) end
end
return 1
