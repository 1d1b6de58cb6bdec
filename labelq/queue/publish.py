"""Everything that puts messages on the queues: chunks from the producer and from workers,
and the trainer's trigger.

The producer's chunks (:class:`ChunkPublisher`): atomic dedupe claim,
backpressure, then Celery messages.

Order matters for "nothing lost": the content hashes of a batch of chunks are
claimed atomically in Redis (so two producers never enqueue the same session
twice), then the chunks are published in one pipelined batch; if publishing
fails the claims are released before the error propagates, so a re-run
enqueues those sessions again.

A Redis restart is ridden out: every Redis step is retried with backoff for up
to ``redis_outage_max_s``. Claims and counts carry a token, so a step retried
after Redis ran it but the reply was lost returns the first answer instead of
running twice (a claim run twice would call its own sessions duplicates). A
publish retried after a partial success enqueues a chunk twice: the same chunk
id, so the same output, written and counted once.

Workers put sessions back on a queue with :func:`republish` (a teacher's
unfinished sessions, a student's escalations, the halves of a poisoned
chunk); those sessions were claimed when they were ingested. A teacher asks
for curation with :func:`trigger_curation_if_due`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson
import redis
from celery import Celery
from celery.utils.nodenames import anon_nodename
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.utils.uuid import uuid

from labelq import keyspace, lua
from labelq.curation_schedule import claim_trigger
from labelq.errors import ServiceUnavailable
from labelq.hashing import chunk_id
from labelq.keyspace import Stat
from labelq.logging import get_logger
from labelq.queue.app import TASK_FOR_QUEUE, TRAINER_TASK
from labelq.queue.inspect import queue_depth
from labelq.schemas import ChunkMessage, SessionItem, chunk_json
from labelq.settings import Settings

log = get_logger(__name__)
_T = TypeVar("_T")

_CLAIM_MAX_ARGS = 4_000  # below Lua's unpack() limit (claim.lua)
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, OSError, KombuOperationalError)
# The rest of a protocol-2 body after the args: no kwargs, no callbacks or chains.
_BODY_TAIL = b'],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}


@dataclass(frozen=True, slots=True)
class OutgoingChunk:
    chunk_id: str
    task: str
    sessions: int
    body: bytes  # the chunk message as JSON


def _redis_failure(action: str, exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(f"Redis unreachable while {action}: {type(exc).__name__}", dependency="redis")


class ChunkPublisher:
    """Claims, publishes and counts chunks for one producer process."""

    def __init__(
        self, settings: Settings, app: Celery, client: redis.Redis,
        on_pause: Callable[[str, int], None] | None = None,
    ) -> None:
        self._settings = settings
        self._app = app
        self._redis = client
        self._claim = lua.script(client, "claim")
        self._count = lua.script(client, "count_once")
        self._on_pause = on_pause or (lambda queue, depth: None)
        self._producer_ctx: Any = None
        self._producer: Any = None
        self.paused_s = 0.0
        self._origin = anon_nodename()
        self._declared: set[str] = set()

    def __enter__(self) -> ChunkPublisher:
        self._producer_ctx = self._app.producer_pool.acquire(block=True)
        self._producer = self._producer_ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._producer_ctx is not None:
            self._producer_ctx.__exit__(*exc)
        self._producer_ctx = self._producer = None

    def seen_key(self, task: str) -> str:
        return keyspace.seen(self._settings, task)

    def _retrying(self, action: str, step: Callable[[], _T]) -> _T:
        """Run a Redis step; through a Redis restart, retry it for up to ``redis_outage_max_s``.
        A failure that is not a lost connection, or one that outlasts that, is ServiceUnavailable."""
        deadline = time.monotonic() + self._settings.redis_outage_max_s
        delay_s = 0.2
        while True:
            try:
                return step()
            except _TRANSIENT as exc:
                if time.monotonic() + delay_s > deadline:
                    raise _redis_failure(action, exc) from exc
                log.warning("redis_unavailable_retrying", action=action, error=type(exc).__name__,
                            retry_in_s=delay_s)
                time.sleep(delay_s)
                delay_s = min(5.0, delay_s * 2)
            except redis.RedisError as exc:  # answered, but refused (out of memory under noeviction, say)
                raise ServiceUnavailable(f"Redis refused {action}: {type(exc).__name__}: {str(exc)[:200]}", dependency="redis") from exc

    def claim(self, task: str, hashes: Sequence[str]) -> list[bool]:
        """True for each hash this call claimed first (a session never enqueued before)."""
        flags: list[bool] = []
        for start in range(0, len(hashes), _CLAIM_MAX_ARGS):
            part = [bytes.fromhex(h) for h in hashes[start:start + _CLAIM_MAX_ARGS]]
            keys = [self.seen_key(task), keyspace.claim_reply(self._settings, uuid())]
            reply = self._retrying("deduplicating", partial(self._claim, keys=keys, args=part))
            flags.extend(c == 49 for c in reply)  # ord("1")
        return flags

    def release(self, task: str, hashes: Sequence[str]) -> None:
        """Undo a claim whose chunk could not be published."""
        if hashes:
            self._redis.srem(self.seen_key(task), *[bytes.fromhex(h) for h in hashes])

    def queue_depth(self, queue: str) -> int:
        return self._retrying("reading queue depth",
                              lambda: queue_depth(self._settings, self._redis, queue))

    def wait_for_room(self, queue: str, incoming: int = 1) -> None:
        """Backpressure: while ``queue`` is above the high-water mark, wait for the low one."""
        high = self._settings.queue_high_water_chunks
        depth = self.queue_depth(queue)
        if depth + incoming <= high:
            return
        log.info("backpressure_pause", queue=queue, depth=depth, high_water=high)
        started = time.monotonic()
        while depth > min(self._settings.queue_low_water_chunks, max(0, high - incoming)):
            self._on_pause(queue, depth)
            time.sleep(self._settings.backpressure_poll_s)
            depth = self.queue_depth(queue)
        self.paused_s += time.monotonic() - started
        log.info("backpressure_resume", queue=queue, depth=depth)

    def publish_many(self, chunks: Sequence[tuple[str, OutgoingChunk]], *, backpressure: bool = True) -> None:
        """Publish ``(queue, chunk)`` pairs in one pipelined batch, after backpressure.

        Workers handing work on (``backpressure=False``) never wait: a teacher
        would wait on a queue only it drains, a student would idle its GPU.
        """
        per_queue: dict[str, int] = {}
        for queue, _ in chunks:
            per_queue[queue] = per_queue.get(queue, 0) + 1
        for queue, n in per_queue.items():
            if backpressure:
                self.wait_for_room(queue, n)

        def publish() -> None:
            with self._producer.batch(max_size=len(chunks) + 1):
                for queue, chunk in chunks:
                    self._publish_one(queue, chunk)

        try:
            self._retrying("publishing", publish)
        except Exception as exc:  # kombu and celery wrap transport errors in their own types
            if type(exc).__module__.startswith(("kombu", "celery", "redis")):
                raise ServiceUnavailable(f"could not publish: {type(exc).__name__}", dependency="redis") from exc
            raise

    def _publish_one(self, queue: str, chunk: OutgoingChunk) -> None:
        """A Celery protocol-2 message whose JSON body embeds the pre-encoded chunk.

        Headers come from Celery itself (``as_task_v2``); only the body skips a
        decode/encode round trip. Routing matches ``send_task``: the anonymous
        exchange, routing key = queue name.
        """
        name = TASK_FOR_QUEUE[queue]
        task_id = uuid()
        message = self._app.amqp.as_task_v2(
            task_id, name, args=(), kwargs={}, origin=self._origin,
            # The header repr carries ids only: no session content in Flower or logs.
            argsrepr=f"<chunk {chunk.chunk_id} task={chunk.task} sessions={chunk.sessions}>",
            kwargsrepr="{}",
        )
        body = b"[[" + chunk.body + _BODY_TAIL
        declare = None if queue in self._declared else [self._app.amqp.queues[queue]]
        self._producer.publish(
            body, exchange="", routing_key=queue, content_type="application/json",
            content_encoding="utf-8", headers=message.headers, delivery_mode=2,
            declare=declare, retry=True, retry_policy=_RETRY, **message.properties,
        )
        self._declared.add(queue)

    def count(self, task: str, *, ingested: int, duplicates: int) -> None:
        keys = [keyspace.stats(self._settings, task), keyspace.count_reply(self._settings, uuid())]
        args: list[str | int] = [Stat.INGESTED, ingested, Stat.DUPLICATES, duplicates]
        self._retrying("counting", lambda: self._count(keys=keys, args=args))


def republish(settings: Settings, app: Celery, client: redis.Redis, queue: str,
              source: ChunkMessage, items: Sequence[SessionItem], route: str | None = None) -> None:
    """Put ``items`` of ``source`` on ``queue`` as new chunks of at most ``chunk_size`` sessions.

    They bypass the dedupe claim (claimed at ingest) and backpressure (a
    worker never waits on a queue); each new chunk's id is derived from its
    content and its source chunk, so a chunk handed back whole is not mistaken
    for its already-committed source.
    """
    route = route or source.route
    with ChunkPublisher(settings, app, client) as publisher:
        outgoing = []
        for start in range(0, len(items), settings.chunk_size):
            part = items[start:start + settings.chunk_size]
            triples = [(s.session_id, s.content_hash, orjson.dumps(s.payload)) for s in part]
            cid = chunk_id(source.task, (s.content_hash for s in part), parent=source.chunk_id)
            outgoing.append((queue, OutgoingChunk(cid, source.task, len(part),
                                                  chunk_json(source.task, route, triples, cid))))
        publisher.publish_many(outgoing, backpressure=False)


def trigger_curation_if_due(settings: Settings, client: redis.Redis, app: Celery, task: str) -> bool:
    """Send one trainer trigger when ``task`` crossed its next curation threshold."""
    threshold = claim_trigger(settings, client, task)
    if threshold is None:
        return False
    app.send_task(TRAINER_TASK, args=[{"task": task, "curate": True}], queue="trainer")
    log.info("trainer_triggered", task=task, teacher_labels=threshold)
    return True
