-- Replace a permit's reserved tokens with the real count; it keeps its place in the window
-- (workers.teacher.limiter.RateLimiter.settle).
-- KEYS: as rate_acquire.lua
-- ARGV[1]  permit id; ARGV[2] tokens reserved; ARGV[3] tokens used
-- Returns 1 settled, 0 when the permit has already left the window.
local old = ARGV[1] .. ':' .. ARGV[2]
local score = redis.call('ZSCORE', KEYS[2], old)
if not score then return 0 end
redis.call('ZREM', KEYS[2], old)
redis.call('ZADD', KEYS[2], score, ARGV[1] .. ':' .. ARGV[3])
redis.call('INCRBY', KEYS[3], tonumber(ARGV[3]) - tonumber(ARGV[2]))
return 1
