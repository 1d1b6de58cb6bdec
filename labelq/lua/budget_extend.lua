-- Keep a live reservation for longer (workers.teacher.budget.Budget.extend): a Batch API batch
-- holds its reservation while it runs, up to a day, and its poller extends it on every poll.
-- KEYS: as budget_reserve.lua (totals hash, expiries, amounts)
-- ARGV[1]  reservation id; ARGV[2] the new lifetime from now, in ms
-- Returns 1 extended, 0 when the reservation is gone (expired, settled, or lost with Redis): an
-- expired one is never revived, and the settle still counts the real cost.
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not expires or tonumber(expires) <= now or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
