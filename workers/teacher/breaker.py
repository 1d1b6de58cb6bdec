"""A circuit breaker on the teacher's provider, shared by every teacher worker through Redis.

    closed ──(threshold outage errors within the window, and at least half the requests)──> open
    open ──(open_s passes, or the provider's Retry-After)──> half-open
    half-open: one worker's request is the probe (SET NX); the others wait
        probe answered ──> closed          probe failed ──> open again

Outage errors are the provider's: 5xx, 408, timeouts, connection errors and
429 (a quota 429 included). While the breaker is not closed no session is sent:
the teacher's chunks wait in the queue (``Paused``) and the status says why
and since when. Nothing is dead-lettered for an outage.

A worker does not ask Redis before every request: the bookkeeping of each answer
reads the breaker in the same round trip, and a breaker seen closed less than
``SEEN_CLOSED_S`` ago is taken as closed. A worker learns that another one opened
the breaker with its next answer or failure (or within ``SEEN_CLOSED_S`` when idle).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from labelq import keyspace, lua
from labelq.logging import get_logger
from labelq.settings import Settings

log = get_logger(__name__)

SEEN_CLOSED_S = 0.5  # a breaker seen closed this recently is not asked again before a request


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
    """One worker's handle on the shared breaker, for one chunk.

    Every reply that reads the breaker (a check, a success or failure counted, ``refresh``) is
    remembered: a breaker seen *closed* less than ``SEEN_CLOSED_S`` ago lets a request go out
    without asking Redis again. A busy worker counts a success every few milliseconds, and each
    count reads the breaker too, so it learns of an opening within one answer; an idle one asks.
    Anything but closed is always read fresh (the half-open probe is claimed in Redis).
    """

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self._redis = client
        self._threshold = settings.teacher_breaker_threshold
        self._window = max(1, int(settings.teacher_breaker_window_s))
        self._open_ms = int(settings.teacher_breaker_open_s * 1000)
        self._probe_ms = int(max(settings.teacher_timeout_s * 2, 1.0) * 1000)
        self._open_key, self._since_key, self._fails_key, self._ok_key, self._probe_key = (
            keyspace.teacher_breaker(settings))
        self._closed_seen_at = -float("inf")  # monotonic time a reply last showed it closed

    async def check(self) -> BreakerOpen | None:
        """None when a request may go out now (closed, or this worker holds the half-open probe)."""
        if time.monotonic() - self._closed_seen_at < SEEN_CLOSED_S:
            return None
        opened, since, ttl_ms = await self._state()
        if opened is not None:
            return BreakerOpen(opened, since, ttl_ms / 1000)
        if since and not await self._redis.set(self._probe_key, b"1", nx=True, px=self._probe_ms):
            return BreakerOpen("probing", since, self._probe_ms / 1000, probing=True)
        return None

    async def refresh(self) -> None:
        """Read the breaker now (a chunk's start: its first requests need not each ask)."""
        await self._state()

    async def _state(self) -> tuple[str | None, float, int]:
        pipe = self._redis.pipeline(transaction=False)
        self._queue_state(pipe)
        return self._seen(await pipe.execute())

    def _queue_state(self, pipe: Pipeline) -> None:
        pipe.get(self._open_key)
        pipe.pttl(self._open_key)
        pipe.get(self._since_key)

    def _seen(self, replies: list[Any]) -> tuple[str | None, float, int]:
        """The three replies of ``_queue_state``: (reason when open, since, ms until a probe)."""
        raw, ttl_ms, since = replies
        reason = orjson.loads(raw)["reason"] if raw else None
        if reason is None and since is None:
            self._closed_seen_at = time.monotonic()
        else:
            self._closed_seen_at = -float("inf")
        return reason, float(since or 0), max(0, int(ttl_ms or 0))

    async def succeeded(self) -> None:
        """The provider answered: counted in the window; a half-open breaker closes."""
        batch = lua.Batch(self._redis)
        at = self.succeeded_in(batch)
        await self.after_success(await batch.execute(), at)

    def succeeded_in(self, batch: lua.Batch) -> int:
        """``succeeded``, queued on ``batch`` with the call's other bookkeeping; pass the batch's
        replies and this index to ``after_success``."""
        at = len(batch)
        batch.pipe.incr(self._ok_key)
        batch.pipe.expire(self._ok_key, self._window, nx=True)  # a fixed window from its first request
        self._queue_state(batch.pipe)
        return at

    async def after_success(self, replies: list[Any], at: int) -> None:
        _, since, _ = self._seen(replies[at + 2:at + 5])
        if since:
            await self._redis.delete(self._since_key, self._fails_key, self._ok_key, self._probe_key, self._open_key)
            self._closed_seen_at = time.monotonic()
            log.warning("teacher_provider_recovered", outage_s=round(time.time() - since, 1))

    async def failed(self, reason: str, retry_after_s: float | None) -> None:
        """An outage error: count it; open the breaker at the threshold (a failed probe reopens it at once)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(self._fails_key)
        pipe.expire(self._fails_key, self._window, nx=True)
        pipe.get(self._ok_key)
        self._queue_state(pipe)
        fails, _, ok, *state = await pipe.execute()
        _, since, _ = self._seen(state)
        fails, ok = int(fails), int(ok or 0)
        if not since and (fails < self._threshold or fails < ok):  # sporadic errors: retried per session
            return
        open_ms = max(self._open_ms, int((retry_after_s or 0) * 1000))
        now = time.time()
        self._closed_seen_at = -float("inf")
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._open_key, orjson.dumps({"reason": reason}), px=open_ms)
        pipe.set(self._since_key, f"{now:.3f}", nx=True)
        pipe.expire(self._since_key, 86_400)  # a breaker nobody probes any more is forgotten
        pipe.delete(self._probe_key, self._fails_key, self._ok_key)
        await pipe.execute()
        log.warning("teacher_breaker_open", reason=reason, open_s=open_ms / 1000, probe_failed=bool(since))
