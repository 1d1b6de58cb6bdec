"""A global rate limiter for the teacher API: requests and tokens per minute, in Redis.

Two rules, checked together by one Lua script (``labelq/lua/rate_acquire.lua``)
on Redis's clock, shared by every worker on every machine:

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

from labelq import lua
from labelq.errors import RateLimited

WINDOW_MS = 60_000


@dataclass(frozen=True)
class Permit:
    id: str
    tokens: int
    granted_at_ms: int


class RateLimiter:
    """Global RPM/TPM limits for one provider account (keys shared by all workers)."""

    def __init__(self, client: aioredis.Redis, keys: list[str], *, rpm: int, tpm: int,
                 window_ms: int = WINDOW_MS, burst: int = 4) -> None:
        self._client = client
        self._keys = keys  # keyspace.rate_limit_keys
        self.rpm = rpm
        self.tpm = tpm
        self.window_ms = window_ms  # 60 s in production; shorter in tests
        self.burst = burst  # requests that may go back to back before pacing applies
        self._acquire = lua.script(client, "rate_acquire")
        self._settle = lua.script(client, "rate_settle")

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
