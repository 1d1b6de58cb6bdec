-- One permit of the global teacher rate limit: requests and tokens per window
-- (workers.teacher.limiter.RateLimiter.acquire), on Redis's clock, shared by every worker.
-- KEYS[1]  request log: permit id scored by grant time (zset)
-- KEYS[2]  token log: '<permit id>:<tokens>' scored by grant time (zset)
-- KEYS[3]  tokens in the window (sum of the token log)
-- KEYS[4]  pacing: the theoretical arrival time of the next request (GCRA)
-- ARGV     window ms, requests per window, tokens per window, tokens wanted, permit id, burst
-- Returns {1, now_ms} granted, or {0, wait_ms} with how long to wait before asking again.
--
-- Two rules, checked together:
-- * a sliding-window log: never more than the limit in any window (a token bucket would allow
--   a full burst on top of a full refill: twice the limit);
-- * pacing (GCRA): requests are spaced window / limit apart, with a small burst allowance.
--   Providers enforce per-minute limits over shorter periods too, and a whole minute's quota
--   sent in one burst arrives with jitter that spills into the next window.
-- Tokens are reserved at the worst case (input estimate + max output) and settled to the real
-- usage after the call (rate_settle.lua). A request larger than the whole token limit is let
-- through alone (used == 0), so it can never wait forever.
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local id, burst = ARGV[5], tonumber(ARGV[6])
local interval = window / rpm
local tat = tonumber(redis.call('GET', KEYS[4]) or '0')
if tat < now then tat = now end
if tat - now > interval * burst then
  return {0, math.ceil(tat - now - interval * burst)}
end
local cutoff = now - window
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)) do
  redis.call('DECRBY', KEYS[3], tonumber(string.match(m, ':(%d+)$')))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
if redis.call('ZCARD', KEYS[1]) + 1 > rpm then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(first[2]) + window - now + 1}
end
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
if used > 0 and used + tokens > tpm then
  local need, freed = used + tokens - tpm, 0
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
    if freed >= need then return {0, tonumber(entries[i + 1]) + window - now + 1} end
  end
  return {0, window}
end
redis.call('ZADD', KEYS[1], now, id)
redis.call('ZADD', KEYS[2], now, id .. ':' .. tokens)
redis.call('INCRBY', KEYS[3], tokens)
redis.call('SET', KEYS[4], tostring(tat + interval))
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], window * 2) end
return {1, now}
