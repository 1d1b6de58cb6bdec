"""Everything that puts messages on the queues: chunks from the producer and from workers,
and the trainer's trigger.

The producer's chunks (:class:`ChunkPublisher`): a session counts as seen
only once its chunk is in a queue. Per batch of chunks, in this order:

1. :meth:`~ChunkPublisher.unseen` reads which hashes were enqueued before
   (read only: nothing is claimed yet);
2. :meth:`~ChunkPublisher.wait_for_chunks` waits out backpressure for the
   fresh chunks, holding no claim (a producer stopped or killed while it
   waits leaves nothing behind): Redis memory above its high-water share of
   maxmemory (``labelq.redis_memory``, once per batch), then each queue by bytes
   (what the list takes in Redis, ``MEMORY USAGE``) and by chunks (the list's length), each
   with a high- and a low-water mark; the task's chunks parked off a queue
   (``labelq.queue.parking``) count toward both, so a task with no adapter
   yet holds its producer as when its chunks waited on the queue;
3. :meth:`~ChunkPublisher.enqueue` sends one MULTI/EXEC transaction: the
   LPUSHes of the Celery messages onto kombu's queue lists, then a Lua gate
   (``enqueue.lua``) that adds the hashes to the dedupe set of the current
   bucket (``labelq.dedupe``: dedupe holds within ``dedupe_window_days``) and
   moves the counters, or, when another producer took some of the hashes since step 1,
   takes the pushes back (LTRIM) and names those hashes (the caller rebuilds
   its chunks without them and tries again). The same transaction adds the
   task to the task registry (``labelq.task_registry``).

A producer killed at any point (SIGKILL included) and run again on the same
sources therefore enqueues every session exactly once, and a Redis crash
loses a claim and its chunk together or neither. The messages are the ones
kombu's Redis transport would push itself (:func:`envelope`): the same JSON
envelope, LPUSHed on the list named after the queue.

A Redis restart is ridden out: every Redis step is retried with backoff for up
to ``redis_outage_max_s``. An enqueue carries a token, so one retried after
Redis ran it but the reply was lost returns the first answer instead of
finding its own hashes taken (or pushing twice). A producer asked to stop
(``stop``, set on SIGTERM) stops waiting, for room or for Redis, and raises
:class:`~labelq.errors.Stopped`; an enqueue already under way is finished.

Workers put sessions back on a queue with :func:`republish` (a teacher's
unfinished sessions, a student's escalations, the halves of a poisoned
chunk); those sessions were claimed when they were ingested, and a
claim-checked one goes back with its reference, never its payload
(:mod:`labelq.payloads`). A teacher asks
for curation with :func:`trigger_curation_if_due`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Sequence
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
from labelq.dedupe import dedupe_keys
from labelq.errors import ServiceUnavailable, Stopped
from labelq.hashing import chunk_id
from labelq.keyspace import Stat
from labelq.logging import get_logger
from labelq.queue.app import TASK_FOR_QUEUE, TRAINER_TASK
from labelq.queue.inspect import queue_bytes, queue_depth
from labelq.queue.parking import PARKED_QUEUES
from labelq.redis_memory import (
    RedisMemory,
    ReservePolicy,
    make_reserve,
    read_memory,
    refused_for_memory,
)
from labelq.schemas import SHADOW_ROUTE, ChunkMessage, SessionItem, chunk_json
from labelq.settings import Settings
from labelq.stopping import StopFlag

log = get_logger(__name__)
_T = TypeVar("_T")

_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, OSError, KombuOperationalError)
# The rest of a protocol-2 body after the args: no kwargs, no callbacks or chains.
_BODY_TAIL = b'],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}
_OK = b"ok"  # enqueue.lua's reply when it wrote everything
_ENVELOPE_BYTES = 1_024  # kombu's envelope around a chunk: headers, properties, delivery info


def message_bytes(body_bytes: int) -> int:
    """At most what a queued chunk message of ``body_bytes`` of JSON takes in Redis: kombu's envelope
    base64-encodes the body (4/3) and adds about 1 KiB, and the allocator rounds an allocation up by
    less than a quarter (jemalloc's size classes)."""
    return (body_bytes * 4 // 3 + _ENVELOPE_BYTES) * 5 // 4


@dataclass(frozen=True, slots=True)
class OutgoingChunk:
    chunk_id: str
    task: str
    sessions: int
    body: bytes  # the chunk message as JSON
    # A shadow chunk (route=shadow: the teacher sample's sessions, labelled by the student for agreement
    # only, labelq.agreement): its header says so, and the audit does not count it in flight.
    shadow: bool = False


def _redis_failure(action: str, exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(f"Redis unreachable while {action}: {type(exc).__name__}", dependency="redis")


def envelope(app: Celery, queue: str, chunk: OutgoingChunk, origin: str) -> bytes:
    """The message kombu's Redis transport would LPUSH for ``chunk``: a Celery protocol-2 task
    message whose JSON body embeds the pre-encoded chunk.

    Headers and properties come from Celery itself (``as_task_v2``); the
    envelope is kombu's (base64 body, a fresh delivery tag, routing as
    ``send_task`` does: the anonymous exchange, routing key = queue name).
    ``tests/integration/test_enqueue.py`` holds it to what kombu writes.
    """
    task_id = uuid()
    message = app.amqp.as_task_v2(
        task_id, TASK_FOR_QUEUE[queue], args=(), kwargs={}, origin=origin,
        # The header repr carries ids only: no session content in Flower or logs.
        argsrepr=f"<chunk {chunk.chunk_id} task={chunk.task} sessions={chunk.sessions}"
                 + (" shadow>" if chunk.shadow else ">"),
        kwargsrepr="{}",
    )
    body = b"[[" + chunk.body + _BODY_TAIL
    return orjson.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.headers,
        "properties": {
            **message.properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid(),
        },
    })


class ChunkPublisher:
    """Reads dedupe, waits for room, and enqueues chunks for one producer process."""

    def __init__(
        self, settings: Settings, app: Celery, client: redis.Redis,
        on_pause: Callable[[str, int], None] | None = None, stop: StopFlag | None = None,
    ) -> None:
        self._settings = settings
        self._app = app
        self._redis = client
        self._on_pause = on_pause or (lambda queue, depth: None)
        self._stop = stop
        self._producer_ctx: Any = None
        self._producer: Any = None
        self.paused_s = 0.0
        self._origin = anon_nodename()
        self._declared: set[str] = set()
        self._reserve = ReservePolicy.from_settings(settings)

    def __enter__(self) -> ChunkPublisher:
        self._producer_ctx = self._app.producer_pool.acquire(block=True)
        self._producer = self._producer_ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._producer_ctx is not None:
            self._producer_ctx.__exit__(*exc)
        self._producer_ctx = self._producer = None

    def _sleep(self, seconds: float) -> None:
        """Sleep, unless asked to stop: then raise Stopped at once."""
        if self._stop is None:
            time.sleep(seconds)
        elif self._stop.wait(seconds):
            raise Stopped("asked to stop")

    def _retrying(self, action: str, step: Callable[[], _T], *, stoppable: bool = True) -> _T:
        """Run a Redis step; through a Redis restart, or a Redis at its maxmemory that refused the step
        whole (nothing written: workers draining make room), retry it for up to ``redis_outage_max_s``.
        Another refusal, or one that outlasts that, is ServiceUnavailable. A ``stoppable`` step stops
        waiting for Redis when asked to stop (nothing of it was written)."""
        deadline = time.monotonic() + self._settings.redis_outage_max_s
        delay_s = 0.2
        while True:
            try:
                return step()
            except (*_TRANSIENT, redis.RedisError) as exc:
                full = refused_for_memory(exc)  # a MULTI or a script Redis refused whole at its ceiling
                if not full and not isinstance(exc, _TRANSIENT):  # answered, but refused
                    raise ServiceUnavailable(f"Redis refused {action}: {type(exc).__name__}: {str(exc)[:200]}",
                                             dependency="redis") from exc
                if time.monotonic() + delay_s > deadline:
                    raise (ServiceUnavailable(f"Redis stayed at its maxmemory while {action}", dependency="redis")
                           if full else _redis_failure(action, exc)) from exc
                log.warning("redis_full_retrying" if full else "redis_unavailable_retrying", action=action,
                            error=type(exc).__name__, retry_in_s=delay_s)
                if stoppable:
                    self._sleep(delay_s)
                else:
                    time.sleep(delay_s)
                delay_s = min(5.0, delay_s * 2)

    def unseen(self, task: str, hashes: Sequence[str]) -> list[bool]:
        """True for each hash never enqueued for ``task`` (read only: claims nothing)."""
        if not hashes:
            return []
        raw = [bytes.fromhex(h) for h in hashes]
        lookup = lua.script(self._redis, "seen_lookup")
        keys = dedupe_keys(self._settings, task).lookup
        known: bytes = self._retrying("deduplicating", lambda: lookup(keys=keys, args=raw))
        return [flag == 48 for flag in known]  # ord("0")

    def queue_depth(self, queue: str, task: str | None = None) -> int:
        """Chunks waiting in ``queue``; with ``task``, its chunks parked off that queue too (they wait in
        Redis all the same: ``labelq.queue.parking``), in the same round trip."""
        if task is None or queue not in PARKED_QUEUES:
            return self._retrying("reading queue depth", lambda: queue_depth(self._settings, self._redis, queue))

        def both() -> int:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.llen(keyspace.queue(self._settings, queue))
                pipe.llen(keyspace.parked(self._settings, queue, task))
                return sum(int(n) for n in pipe.execute())

        return self._retrying("reading queue depth", both)

    def redis_memory(self) -> RedisMemory:
        """Redis's memory now; holds the reserve for the workers when there is room for it."""
        return self._retrying("reading Redis memory", lambda: make_reserve(
            self._redis, self._reserve, read_memory(self._redis, self._reserve.key)))

    def wait_for_memory(self) -> None:
        """Backpressure on Redis memory: while Redis uses more than the high-water share of its
        maxmemory, wait for the low one (``labelq.redis_memory``). Raises Stopped when asked to stop."""
        high, low = self._settings.redis_memory_high_water, self._settings.redis_memory_low_water
        memory = self.redis_memory()
        if not memory.above(high):
            return
        log.info("backpressure_pause", on="redis_memory", used_bytes=memory.used_bytes,
                 max_bytes=memory.max_bytes, high_water=high)
        started = time.monotonic()
        try:
            while memory.above(low):
                self._sleep(self._settings.backpressure_poll_s)
                memory = self.redis_memory()
        finally:
            self.paused_s += time.monotonic() - started
        log.info("backpressure_resume", on="redis_memory", used_bytes=memory.used_bytes, max_bytes=memory.max_bytes)


    def queue_bytes(self, queue: str, task: str | None = None) -> int:
        """What ``queue``'s list takes in Redis; with ``task``, its parked list too."""
        used = self._retrying("reading queue bytes", lambda: queue_bytes(self._settings, self._redis, queue))
        if task is not None and queue in PARKED_QUEUES:
            parked = keyspace.parked(self._settings, queue, task)
            samples = self._settings.queue_high_water_chunks  # as for the queue: exact up to that many nodes
            used += int(self._retrying("reading queue bytes",
                                       lambda: self._redis.memory_usage(parked, samples=samples)) or 0)
        return used

    def wait_for_room(self, queue: str, incoming: int = 1, incoming_bytes: int = 0,
                      task: str | None = None) -> None:
        """Backpressure: while ``queue`` (with ``task``'s chunks parked off it) is above the high-water
        mark, wait for the low one; in bytes (``incoming_bytes``: what the chunks about to be pushed take,
        :func:`message_bytes`), then in chunks; first, while Redis memory is above its high-water share
        (:meth:`wait_for_memory`). Raises Stopped when asked to stop meanwhile."""
        self.wait_for_memory()
        self._wait_for_queue(queue, incoming, incoming_bytes, task)

    def wait_for_chunks(self, chunks: Sequence[tuple[str, OutgoingChunk]], task: str) -> None:
        """:meth:`wait_for_room` for a batch about to be pushed: Redis memory once, then each queue it
        goes to with what it brings (chunks and message bytes)."""
        per_queue: dict[str, list[int]] = {}
        for queue, chunk in chunks:
            per_queue.setdefault(queue, []).append(message_bytes(len(chunk.body)))
        self.wait_for_memory()
        for queue, sizes in per_queue.items():
            self._wait_for_queue(queue, len(sizes), sum(sizes), task)

    def _wait_for_queue(self, queue: str, incoming: int, incoming_bytes: int, task: str | None) -> None:
        s = self._settings
        # Bytes first (a few large sessions fill Redis long before the chunk mark), then chunks.
        self._wait_below(queue, "bytes", lambda: self.queue_bytes(queue, task), incoming_bytes,
                         s.queue_high_water_bytes, s.queue_low_water_bytes, task)
        self._wait_below(queue, "depth", lambda: self.queue_depth(queue, task), incoming,
                         s.queue_high_water_chunks, s.queue_low_water_chunks, task)

    def _wait_below(self, queue: str, measure: str, read: Callable[[], int], incoming: int, high: int, low: int,
                    task: str | None) -> None:
        """While ``read()`` (the queue's chunks, or the bytes its list takes) and ``incoming`` would pass
        ``high``, wait until it is down to ``low`` (or to what leaves room for ``incoming``). A batch larger
        than the mark waits for an empty queue: with claim checks a chunk's bytes are bounded, so the
        queue is bounded by the mark or one batch."""
        used = read()
        if used + incoming <= high:
            return
        mark = "high_water" if measure == "depth" else f"high_water_{measure}"  # the log fields as before
        log.info("backpressure_pause", queue=queue, **{measure: used, mark: high})
        started = time.monotonic()
        try:
            while used > min(low, max(0, high - incoming)):
                self._on_pause(queue, used if measure == "depth" else self.queue_depth(queue, task))
                self._sleep(self._settings.backpressure_poll_s)
                used = read()
        finally:
            self.paused_s += time.monotonic() - started
        log.info("backpressure_resume", queue=queue, **{measure: used})

    def enqueue(self, task: str, chunks: Sequence[tuple[str, OutgoingChunk]], hashes: Sequence[str],
                *, duplicates: int = 0) -> set[str]:
        """In one atomic step: claim ``hashes`` (distinct; the sessions of ``chunks``), push
        ``chunks`` and count them (and ``duplicates``) for ``task``.

        Returns the empty set when it did; else the hashes another producer
        enqueued meanwhile, and nothing was written. Not stopped by ``stop``:
        the batch in hand is finished (or Redis gives up: ServiceUnavailable,
        and nothing or everything was written).
        """
        if not chunks and not hashes and not duplicates:
            return set()
        per_queue: dict[str, list[bytes]] = {}
        for queue, chunk in chunks:
            per_queue.setdefault(queue, []).append(envelope(self._app, queue, chunk, self._origin))
        self._declare(per_queue)
        queue_keys = [keyspace.queue(self._settings, queue) for queue in per_queue]
        dedupe = dedupe_keys(self._settings, task)
        keys = [keyspace.claim_reply(self._settings, uuid()), keyspace.stats(self._settings, task),
                dedupe.current.set_key, dedupe.current.count_key, dedupe.legacy, *dedupe.others, *queue_keys]
        args: list[bytes | str | int] = [
            len(hashes), Stat.INGESTED, Stat.DUPLICATES, duplicates, dedupe.current.expire_at_s,
            dedupe.legacy_ttl_s, len(dedupe.others),
            *(len(messages) for messages in per_queue.values()), *(bytes.fromhex(h) for h in hashes)]

        def step() -> Any:
            # EVAL, not EVALSHA: a NOSCRIPT inside MULTI (a restarted Redis) fails only the gate, and
            # the pushes before it would stand unclaimed. Redis caches the script by its text's SHA.
            with self._redis.pipeline(transaction=True) as pipe:
                for key, messages in zip(queue_keys, per_queue.values(), strict=True):
                    pipe.lpush(key, *messages)  # in order: as one LPUSH each, oldest first
                pipe.sadd(keyspace.task_registry(self._settings), task)  # before its counts: labelq.task_registry
                pipe.eval(lua.source("enqueue"), len(keys), *keys, *args)
                return pipe.execute()[-1]

        reply = self._retrying("enqueueing", step, stoppable=False)
        if reply == _OK:
            return set()
        return {h for h, flag in zip(hashes, reply, strict=True) if flag == 49}  # ord("1")

    def _declare(self, queues: Iterable[str]) -> None:
        """Declare each queue once per process, as kombu does on its first publish (its binding)."""
        for queue in set(queues) - self._declared:
            declare = partial(self._producer.maybe_declare, self._app.amqp.queues[queue], retry=True, **_RETRY)
            self._retrying("declaring a queue", declare)
            self._declared.add(queue)

    def publish_many(self, chunks: Sequence[tuple[str, OutgoingChunk]], *, backpressure: bool = True) -> None:
        """Push ``(queue, chunk)`` pairs in one atomic step, after backpressure; no dedupe claim.

        Workers handing work on (``backpressure=False``) never wait: a teacher
        would wait on a queue only it drains, a student would idle its GPU.
        """
        if not chunks:
            return
        if backpressure:
            self.wait_for_chunks(chunks, chunks[0][1].task)
        try:
            self.enqueue(chunks[0][1].task, chunks, [])
        except Exception as exc:  # kombu and celery wrap transport errors in their own types
            if type(exc).__module__.startswith(("kombu", "celery", "redis")):
                raise ServiceUnavailable(f"could not publish: {type(exc).__name__}", dependency="redis") from exc
            raise


def republish(settings: Settings, app: Celery, client: redis.Redis, queue: str,
              source: ChunkMessage, items: Sequence[SessionItem], route: str | None = None) -> None:
    """Put ``items`` of ``source`` on ``queue`` as new chunks of at most ``chunk_size`` sessions.

    They bypass the dedupe claim (claimed at ingest) and backpressure (a
    worker never waits on a queue); each new chunk's id is derived from its
    content and its source chunk, so a chunk handed back whole is not mistaken
    for its already-committed source. A claim-checked session keeps its
    reference (its payload stays in the store, out of Redis).
    """
    route = route or source.route
    with ChunkPublisher(settings, app, client) as publisher:
        outgoing = []
        for start in range(0, len(items), settings.chunk_size):
            part = items[start:start + settings.chunk_size]
            triples = [(s.session_id, s.content_hash, s.wire_part()) for s in part]
            cid = chunk_id(source.task, (s.content_hash for s in part), parent=source.chunk_id)
            outgoing.append((queue, OutgoingChunk(cid, source.task, len(part),
                                                  chunk_json(source.task, route, triples, cid),
                                                  shadow=route == SHADOW_ROUTE)))
        publisher.publish_many(outgoing, backpressure=False)


def trigger_curation_if_due(settings: Settings, client: redis.Redis, app: Celery, task: str) -> bool:
    """Send one trainer trigger when ``task`` crossed its next curation threshold."""
    threshold = claim_trigger(settings, client, task)
    if threshold is None:
        return False
    app.send_task(TRAINER_TASK, args=[{"task": task, "curate": True}], queue="trainer")
    log.info("trainer_triggered", task=task, teacher_labels=threshold)
    return True
