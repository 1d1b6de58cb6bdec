"""Reading the queues without consuming them: depths, queued and unacknowledged chunk messages.

kombu's Redis transport keeps a queue as a Redis list named after the queue
(under labelq's key prefix): new messages are pushed on the left, consumers
pop on the right. A message a worker has taken and not yet acknowledged sits
in kombu's private ``unacked`` hash (delivery tag -> ``[message, exchange,
routing key]``) until it is acknowledged, or restored to its list when it is
older than the visibility timeout. Both keys are named in the keyspace
(:func:`labelq.keyspace.queue`, :func:`labelq.keyspace.unacked`); reading and
decoding kombu's messages happens here and nowhere else.

Messages are Celery protocol 2: a JSON envelope whose base64 ``body`` is
``[args, kwargs, embed]``; a chunk task's only argument is the chunk's wire dict.
labelq's envelopes (``labelq.queue.publish.envelope``) also say in a header
(``argsrepr``: ``<chunk ID task=TASK sessions=N>``) what the chunk holds, so the
audit counts a message's sessions without decoding its body
(:func:`chunk_message_count`; the body only when a message lacks that header).

The audit reads the queues, the parked lists, the ``unacked`` hash and the
redrive outbox in pages of :data:`PAGE_MESSAGES` (:func:`in_flight_counts`): its
memory is one page whatever the queues hold, and its commands are one per page
(the first pages of every key in one round trip). A message read twice because
a push shifted a page is counted once (by its Celery task id).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from labelq import keyspace
from labelq.queue.parking import PARKED_QUEUES
from labelq.schemas import SHADOW_ROUTE
from labelq.settings import QUEUES, Settings

CHUNK_QUEUES = ("teacher", "student")
PAGE_MESSAGES = 200  # messages (or hash entries) read per command by the audit
_ARGSREPR = re.compile(r"<chunk (\S+) task=(\S+) sessions=(\d+)( shadow)?>\Z")  # publish.envelope's header


def queue_depth(settings: Settings, client: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue`` (not counting those a worker holds unacknowledged)."""
    return int(client.llen(keyspace.queue(settings, queue)))


def queue_bytes(settings: Settings, client: redis.Redis, queue: str) -> int:
    """What ``queue``'s list of waiting messages takes in Redis memory, in bytes (0 when empty).

    ``MEMORY USAGE`` walks the list's nodes (a large message is a node of its own; small ones share
    one), so it is exact, and read live as workers pop, up to ``queue_high_water_chunks`` nodes, the
    regime the chunk mark keeps a queue in; beyond that Redis estimates from the newest that many.
    (Not a byte counter kept by the enqueue script: workers pop with kombu's BRPOP, which runs no
    labelq code, so such a counter could only be taken down at acknowledgement and would drift with
    every restored, purged or lost message.)
    """
    used = client.memory_usage(keyspace.queue(settings, queue), samples=settings.queue_high_water_chunks)
    return int(used or 0)


def queue_depths(settings: Settings, client: redis.Redis) -> dict[str, int]:
    """Every labelq queue's depth, by queue name (one round trip)."""
    with client.pipeline(transaction=False) as pipe:
        for name in QUEUES:
            pipe.llen(keyspace.queue(settings, name))
        depths = pipe.execute()
    return dict(zip(QUEUES, (int(d) for d in depths), strict=True))


def _body_chunk(message: dict[str, Any]) -> dict[str, Any] | None:
    body = orjson.loads(base64.b64decode(message["body"]))
    chunk = body[0][0]
    return chunk if isinstance(chunk, dict) and "sessions" in chunk else None


def _message(envelope: bytes | str) -> dict[str, Any]:
    message = orjson.loads(envelope)
    if isinstance(message, list):  # kombu's unacked entries: [message, exchange, routing key]
        message = message[0]
    if not isinstance(message, dict):
        raise TypeError("not a message")
    return message


def decode_chunk_message(envelope: bytes | str) -> dict[str, Any] | None:
    """The chunk (wire dict) inside a queued or unacked Celery message; None for other messages."""
    try:
        return _body_chunk(_message(envelope))
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class ChunkCount:
    """What the audit needs of one chunk message: whose sessions, how many, and which message it is."""

    message_id: str | None  # the Celery task id (the same across a redelivery); None if it has none
    task: str
    sessions: int


def chunk_message_count(envelope: bytes | str) -> ChunkCount | None:
    """A chunk message's task and session count, from its ``argsrepr`` header (the body is decoded only
    for a message without it); None for other messages, and for shadow chunks (``route=shadow``: copies
    of sessions in flight to the teacher, labelled for agreement only, ``labelq.agreement``)."""
    try:
        message = _message(envelope)
        headers = message.get("headers") or {}
        message_id = headers.get("id")
        message_id = str(message_id) if message_id is not None else None
        said = _ARGSREPR.match(str(headers.get("argsrepr") or ""))
        if said is not None:
            return None if said[4] else ChunkCount(message_id, said[2], int(said[3]))
        chunk = _body_chunk(message)
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        return None
    return None if chunk is None or chunk.get("route") == SHADOW_ROUTE else ChunkCount(message_id, str(chunk.get("task")), len(chunk["sessions"]))


def _chunks(raws: Any) -> list[dict[str, Any]]:
    return [c for c in map(decode_chunk_message, raws) if c is not None]


def queued_chunks(settings: Settings, client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The chunks waiting in ``queue``, oldest (next to be taken) first (all in memory: for tests and tools)."""
    return _chunks(reversed(client.lrange(keyspace.queue(settings, queue), 0, -1)))


def unacked_chunks(settings: Settings, client: redis.Redis) -> list[dict[str, Any]]:
    """The chunks workers have taken and not acknowledged (redelivered if their worker dies)."""
    return _chunks(client.hvals(keyspace.unacked(settings)))


def _list_pages(client: redis.Redis, key: str, first: list[bytes]) -> Iterator[list[bytes]]:
    """``first`` (LRANGE 0 .. PAGE-1 of ``key``), then the following pages until one comes back short."""
    page, start = first, 0
    while True:
        yield page
        if len(page) < PAGE_MESSAGES:
            return
        start += PAGE_MESSAGES
        page = client.lrange(key, start, start + PAGE_MESSAGES - 1)  # type: ignore[assignment]


def _hash_pages(client: redis.Redis, key: str, first: tuple[int, dict[bytes, bytes]]
                ) -> Iterator[dict[bytes, bytes]]:
    """``first`` (HSCAN 0 of ``key``), then the following pages until the cursor comes back to 0."""
    cursor, page = first
    while True:
        yield page
        if int(cursor) == 0:
            return
        cursor, page = client.hscan(key, cursor, count=PAGE_MESSAGES)  # type: ignore[assignment]


def in_flight_counts(settings: Settings, client: redis.Redis, tasks: Iterable[str]) -> dict[str, int]:
    """Sessions in flight per task, counted in the messages themselves: chunks waiting in a chunk queue
    or parked off one (for each of ``tasks``), taken by a worker and not acknowledged, or in the
    redrive outbox. Read in pages; exact when nothing moves meanwhile (on a live system a chunk that
    moves between two of these places while they are read can be missed or counted twice)."""
    lists = [keyspace.queue(settings, queue) for queue in CHUNK_QUEUES]
    lists += [keyspace.parked(settings, queue, task) for task in tasks for queue in PARKED_QUEUES]
    unacked, outbox = keyspace.unacked(settings), keyspace.redrive_outbox(settings)
    with client.pipeline(transaction=False) as pipe:
        for key in lists:
            pipe.lrange(key, 0, PAGE_MESSAGES - 1)
        pipe.hscan(unacked, 0, count=PAGE_MESSAGES)
        pipe.hscan(outbox, 0, count=PAGE_MESSAGES)
        *first_pages, first_unacked, first_outbox = pipe.execute()
    counts: dict[str, int] = {}
    seen_messages: set[str] = set()

    def add(count: ChunkCount | None) -> None:
        if count is None:
            return
        if count.message_id is not None:
            if count.message_id in seen_messages:
                return
            seen_messages.add(count.message_id)
        counts[count.task] = counts.get(count.task, 0) + count.sessions

    for key, first in zip(lists, first_pages, strict=True):
        for page in _list_pages(client, key, first):
            for raw in page:
                add(chunk_message_count(raw))
    for entries in _hash_pages(client, unacked, first_unacked):
        for raw in entries.values():
            add(chunk_message_count(raw))
    outboxed: set[bytes] = set()  # chunk ids: HSCAN may return an entry twice
    for entries in _hash_pages(client, outbox, first_outbox):
        for chunk_key, raw in entries.items():
            if chunk_key not in outboxed:
                outboxed.add(chunk_key)
                chunk = orjson.loads(raw)["chunk"]
                add(ChunkCount(None, str(chunk["task"]), len(chunk["sessions"])))
    return counts


def unacked_tags(settings: Settings, client: redis.Redis, queue: str) -> set[bytes]:
    """Delivery tags of ``queue``'s messages a worker has taken and not acknowledged.
    A message taken again after a redelivery gets a new tag."""
    tags = set()
    raw: dict[bytes, bytes] = client.hgetall(keyspace.unacked(settings))  # type: ignore[assignment]
    for tag, entry in raw.items():
        message = orjson.loads(entry)
        if isinstance(message, list) and len(message) == 3 and message[2] == queue:
            tags.add(tag)
    return tags
