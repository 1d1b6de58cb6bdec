"""Publishing chunks: atomic dedupe claim, backpressure, then one Celery message.

Order matters for "nothing lost": the content hashes of a chunk are claimed
atomically in Redis (so two producers never enqueue the same session twice),
then the chunk is published; if publishing fails the claim is released
before the error propagates, so a re-run enqueues those sessions again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from celery import Celery

from labelq.celery_app import TASK_FOR_QUEUE, queue_redis_key
from labelq.errors import ServiceUnavailable
from labelq.logging import get_logger
from labelq.settings import Settings

log = get_logger(__name__)

# SADD each hash and report which ones were new, in one atomic step.
_CLAIM_LUA = """
local out = {}
for i, h in ipairs(ARGV) do
  out[i] = redis.call('SADD', KEYS[1], h)
end
return out
"""


class ChunkPublisher:
    """Claims, publishes and counts chunks for one producer process."""

    def __init__(
        self, settings: Settings, app: Celery, client: redis.Redis,
        on_pause: Callable[[str, int], None] | None = None,
    ) -> None:
        self._settings = settings
        self._app = app
        self._redis = client
        self._claim = client.register_script(_CLAIM_LUA)
        self._on_pause = on_pause or (lambda queue, depth: None)
        self._producer_ctx: Any = None
        self._producer: Any = None
        self.paused_s = 0.0

    def __enter__(self) -> ChunkPublisher:
        self._producer_ctx = self._app.producer_pool.acquire(block=True)
        self._producer = self._producer_ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._producer_ctx is not None:
            self._producer_ctx.__exit__(*exc)
        self._producer_ctx = self._producer = None

    def seen_key(self, task: str) -> str:
        return self._settings.redis_key("seen", task)

    def claim(self, task: str, hashes: Sequence[str]) -> list[bool]:
        """True for each hash this call claimed first (a session never enqueued before)."""
        try:
            flags = self._claim(keys=[self.seen_key(task)], args=[bytes.fromhex(h) for h in hashes])
        except redis.RedisError as exc:
            raise ServiceUnavailable(f"Redis unreachable while deduplicating: {type(exc).__name__}") from exc
        return [bool(f) for f in flags]

    def release(self, task: str, hashes: Sequence[str]) -> None:
        """Undo a claim whose chunk could not be published."""
        if hashes:
            self._redis.srem(self.seen_key(task), *[bytes.fromhex(h) for h in hashes])

    def queue_depth(self, queue: str) -> int:
        return int(self._redis.llen(queue_redis_key(self._settings, queue)))

    def wait_for_room(self, queue: str) -> None:
        """Backpressure: while ``queue`` is above the high-water mark, wait for the low one."""
        depth = self.queue_depth(queue)
        if depth <= self._settings.queue_high_water_chunks:
            return
        log.info("backpressure_pause", queue=queue, depth=depth,
                 high_water=self._settings.queue_high_water_chunks)
        started = time.monotonic()
        while depth > self._settings.queue_low_water_chunks:
            self._on_pause(queue, depth)
            time.sleep(self._settings.backpressure_poll_s)
            depth = self.queue_depth(queue)
        self.paused_s += time.monotonic() - started
        log.info("backpressure_resume", queue=queue, depth=depth)

    def publish(self, queue: str, message: dict[str, Any]) -> None:
        try:
            self.wait_for_room(queue)
            self._app.send_task(
                TASK_FOR_QUEUE[queue], args=[message], queue=queue, producer=self._producer,
                retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2,
                                          "interval_step": 0.5, "interval_max": 2},
            )
        except (redis.RedisError, OSError) as exc:
            raise ServiceUnavailable(f"could not publish to queue {queue!r}: {type(exc).__name__}") from exc
        except Exception as exc:  # kombu wraps transport errors in its own types
            if type(exc).__module__.startswith(("kombu", "celery", "redis")):
                raise ServiceUnavailable(
                    f"could not publish to queue {queue!r}: {type(exc).__name__}"
                ) from exc
            raise

    def count(self, task: str, *, ingested: int, duplicates: int) -> None:
        pipe = self._redis.pipeline(transaction=False)
        stats = self._settings.redis_key("stats", task)
        pipe.hincrby(stats, "ingested", ingested)
        pipe.hincrby(stats, "duplicates", duplicates)
        pipe.execute()
