"""A global rate limiter for the teacher API: requests and tokens per minute, in Redis.

Two rules, checked together by one Lua script on Redis's clock, shared by
every worker on every machine:

* a sliding-window log: never more than the limit in any window (a token
  bucket would allow a full burst on top of a full refill: twice the limit);
* pacing (GCRA): requests are spaced ``window / limit`` apart, with a small
  burst allowance. Providers enforce per-minute limits over shorter periods
  too, and a whole minute's quota sent in one burst arrives with jitter that
  spills into the next window.

Tokens are reserved at the worst case (input estimate + max output) and
settled to the real usage after the call.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from labelq.errors import RateLimited

WINDOW_MS = 60_000

_ACQUIRE = """
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
"""

_SETTLE = """
local old = ARGV[1] .. ':' .. ARGV[2]
local score = redis.call('ZSCORE', KEYS[2], old)
if not score then return 0 end
redis.call('ZREM', KEYS[2], old)
redis.call('ZADD', KEYS[2], score, ARGV[1] .. ':' .. ARGV[3])
redis.call('INCRBY', KEYS[3], tonumber(ARGV[3]) - tonumber(ARGV[2]))
return 1
"""


@dataclass(frozen=True)
class Permit:
    id: str
    tokens: int
    granted_at_ms: int


class RateLimiter:
    """Global RPM/TPM limits for one provider account (keys shared by all workers)."""

    def __init__(self, client: aioredis.Redis, prefix: str, *, rpm: int, tpm: int,
                 window_ms: int = WINDOW_MS, burst: int = 4) -> None:
        self._client = client
        self._keys = [f"{prefix}rl:req", f"{prefix}rl:tok", f"{prefix}rl:tok_sum", f"{prefix}rl:tat"]
        self.rpm = rpm
        self.tpm = tpm
        self.window_ms = window_ms  # 60 s in production; shorter in tests
        self.burst = burst  # requests that may go back to back before pacing applies
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)

    async def acquire(self, tokens: int, *, deadline: float) -> Permit:
        """Wait for room for one request of ``tokens``; RateLimited if ``deadline`` comes first."""
        permit_id = uuid.uuid4().hex
        while True:
            ok, value = await self._acquire(
                keys=self._keys, args=[self.window_ms, self.rpm, self.tpm, tokens, permit_id, self.burst])
            if ok:
                return Permit(permit_id, tokens, int(value))
            wait_s = max(0.005, int(value) / 1000)
            if time.monotonic() + wait_s > deadline:
                raise RateLimited("teacher rate limit: no room before the chunk deadline",
                                  retry_after_s=wait_s)
            # A little spread so that waiting workers do not all ask in the same millisecond.
            await asyncio.sleep(wait_s + (hash(permit_id) % 20) / 1000)

    async def settle(self, permit: Permit, actual_tokens: int) -> None:
        """Replace the reserved token count with the real one (it stays in the window)."""
        await self._settle(keys=self._keys, args=[permit.id, permit.tokens, max(0, actual_tokens)])
