-- Replace a reservation with the call's real cost (workers.teacher.budget.Budget.settle).
-- KEYS: as budget_reserve.lua (totals hash, expiries, amounts)
-- ARGV[1]  reservation id; ARGV[2] the real cost in micro-dollars; ARGV[3] when the totals expire
-- (unix ms; 0: never)
-- Returns the new 'spent' total. A reservation that already expired (or that Redis lost) is simply
-- gone; the real cost is still spent.
local amount = redis.call('HGET', KEYS[3], ARGV[1])
if amount then
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(amount))
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local spent = redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[2]))
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return spent
