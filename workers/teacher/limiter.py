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
from typing import Any

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

    def ask(self, tokens: int) -> lua.Call:
        """The script call that asks for one permit of ``tokens``, to send along with another step
        (``Budget.reserve_and``); ``acquire(asked=...)`` carries on from its reply."""
        return lua.Call("rate_acquire", self._keys,
                        [self.window_ms, self.rpm, self.tpm, tokens, uuid.uuid4().hex, self.burst])

    async def acquire(self, tokens: int, *, deadline: float, asked: tuple[lua.Call, Any] | None = None) -> Permit:
        """Wait for room for one request of ``tokens``; RateLimited if ``deadline`` comes first.
        ``asked``: a call of ``ask(tokens)`` already sent, and its reply (None: not sent after all)."""
        call, reply = asked if asked is not None else (self.ask(tokens), None)
        permit_id = str(call.args[4])
        while True:
            if reply is None:
                reply = await self._acquire(keys=call.keys, args=call.args)
            ok, value = reply
            reply = None
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

    def settle_in(self, batch: lua.Batch, permit: Permit, actual_tokens: int) -> None:
        """``settle``, queued on ``batch`` (sent with the call's other bookkeeping)."""
        batch.script("rate_settle", self._keys, [permit.id, permit.tokens, max(0, actual_tokens)])
