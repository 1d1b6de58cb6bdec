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
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson
import redis

from labelq import keyspace
from labelq.settings import QUEUES, Settings

CHUNK_QUEUES = ("teacher", "student")


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
    """Every labelq queue's depth, by queue name."""
    return {name: queue_depth(settings, client, name) for name in QUEUES}


def decode_chunk_message(envelope: bytes | str) -> dict[str, Any] | None:
    """The chunk (wire dict) inside a queued or unacked Celery message; None for other messages."""
    try:
        message = orjson.loads(envelope)
        if isinstance(message, list):  # kombu's unacked entries: [message, exchange, routing key]
            message = message[0]
        body = orjson.loads(base64.b64decode(message["body"]))
        chunk = body[0][0]
        return chunk if isinstance(chunk, dict) and "sessions" in chunk else None
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        return None


def _chunks(raws: Any) -> list[dict[str, Any]]:
    return [c for c in map(decode_chunk_message, raws) if c is not None]


def queued_chunks(settings: Settings, client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The chunks waiting in ``queue``, oldest (next to be taken) first."""
    return _chunks(reversed(client.lrange(keyspace.queue(settings, queue), 0, -1)))


def unacked_chunks(settings: Settings, client: redis.Redis) -> list[dict[str, Any]]:
    """The chunks workers have taken and not acknowledged (redelivered if their worker dies)."""
    return _chunks(client.hvals(keyspace.unacked(settings)))


def outbox_chunks(settings: Settings, client: redis.Redis) -> list[dict[str, Any]]:
    """The chunks a redrive counted out of the dead letters and has not published yet
    (``labelq.redrive``: an interrupted run leaves them for the next)."""
    return [orjson.loads(raw)["chunk"] for raw in client.hvals(keyspace.redrive_outbox(settings))]


def in_flight_chunks(settings: Settings, client: redis.Redis) -> Iterator[dict[str, Any]]:
    """Every chunk waiting in a chunk queue, reserved by a worker, or in the redrive outbox."""
    for queue in CHUNK_QUEUES:
        yield from queued_chunks(settings, client, queue)
    yield from unacked_chunks(settings, client)
    yield from outbox_chunks(settings, client)


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
