"""A circuit breaker on the teacher's provider, shared by every teacher worker through Redis.

    closed ──(threshold outage errors within the window, and at least half the requests)──> open
    open ──(open_s passes, or the provider's Retry-After)──> half-open
    half-open: one worker's request is the probe (SET NX); the others wait
        probe answered ──> closed          probe failed ──> open again

Outage errors are the provider's: 5xx, 408, timeouts, connection errors and
429 (a quota 429 included). While the breaker is not closed no session is sent:
the teacher's chunks wait in the queue (``Paused``) and the status says why
and since when. Nothing is dead-lettered for an outage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from labelq import keyspace
from labelq.logging import get_logger
from labelq.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BreakerOpen:
    """Why the teacher may not call the provider now."""

    reason: str  # the last outage error, e.g. teacher_http_503
    since: float  # unix time the breaker first opened in this outage
    retry_in_s: float
    probing: bool = False  # half-open: another request is the probe (its answer comes soon)

    def describe(self) -> str:
        return (f"the teacher's provider is out ({self.reason}) since "
                f"{time.strftime('%H:%M:%S UTC', time.gmtime(self.since))}; next probe in {self.retry_in_s:.0f} s")


class Breaker:
    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self._redis = client
        self._threshold = settings.teacher_breaker_threshold
        self._window = max(1, int(settings.teacher_breaker_window_s))
        self._open_ms = int(settings.teacher_breaker_open_s * 1000)
        self._probe_ms = int(max(settings.teacher_timeout_s * 2, 1.0) * 1000)
        self._open_key, self._since_key, self._fails_key, self._ok_key, self._probe_key = (
            keyspace.teacher_breaker(settings))

    async def check(self) -> BreakerOpen | None:
        """None when a request may go out now (closed, or this worker holds the half-open probe)."""
        opened, since, ttl_ms = await self._state()
        if opened is not None:
            return BreakerOpen(opened, since, ttl_ms / 1000)
        if since and not await self._redis.set(self._probe_key, b"1", nx=True, px=self._probe_ms):
            return BreakerOpen("probing", since, self._probe_ms / 1000, probing=True)
        return None

    async def _state(self) -> tuple[str | None, float, int]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._open_key)
        pipe.pttl(self._open_key)
        pipe.get(self._since_key)
        raw, ttl_ms, since = await pipe.execute()
        reason = orjson.loads(raw)["reason"] if raw else None
        return reason, float(since or 0), max(0, int(ttl_ms or 0))

    async def succeeded(self) -> None:
        """The provider answered: counted in the window; a half-open breaker closes."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.incr(self._ok_key)
        pipe.expire(self._ok_key, self._window, nx=True)  # a fixed window from its first request
        pipe.get(self._since_key)
        *_, since = await pipe.execute()
        if since is not None:
            await self._redis.delete(self._since_key, self._fails_key, self._ok_key, self._probe_key, self._open_key)
            log.warning("teacher_provider_recovered", outage_s=round(time.time() - float(since), 1))

    async def failed(self, reason: str, retry_after_s: float | None) -> None:
        """An outage error: count it; open the breaker at the threshold (a failed probe reopens it at once)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(self._fails_key)
        pipe.expire(self._fails_key, self._window, nx=True)
        pipe.get(self._ok_key)
        pipe.exists(self._since_key)
        fails, _, ok, half_open = await pipe.execute()
        fails, ok = int(fails), int(ok or 0)
        if not half_open and (fails < self._threshold or fails < ok):  # sporadic errors: retried per session
            return
        open_ms = max(self._open_ms, int((retry_after_s or 0) * 1000))
        now = time.time()
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._open_key, orjson.dumps({"reason": reason}), px=open_ms)
        pipe.set(self._since_key, f"{now:.3f}", nx=True)
        pipe.expire(self._since_key, 86_400)  # a breaker nobody probes any more is forgotten
        pipe.delete(self._probe_key, self._fails_key, self._ok_key)
        await pipe.execute()
        log.warning("teacher_breaker_open", reason=reason, open_s=open_ms / 1000, probe_failed=bool(half_open))
