-- Start a period's budget totals from the durable record, once (workers.teacher.budget.Budget).
-- KEYS[1]  totals hash (as budget_reserve.lua: 'spent', 'seeded')
-- ARGV[1]  the durable spend in micro-dollars: the sum of every writer's record in the store
-- ARGV[2]  when the totals expire (unix ms; 0: never)
-- Returns 1 seeded, 0 already seeded (another worker was first: nothing changes). 'spent' becomes
-- the larger of the two records: what Redis holds (calls settled after a flush, before this seed)
-- and the durable one (every writer's money sent or about to be sent), so a flush never reopens
-- money already spent.
redis.replicate_commands()
if redis.call('HEXISTS', KEYS[1], 'seeded') == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local durable = tonumber(ARGV[1])
if durable > spent then redis.call('HSET', KEYS[1], 'spent', durable) end
redis.call('HSET', KEYS[1], 'seeded', now)
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 1
