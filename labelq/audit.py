"""``labelq audit``: every ingested session is labelled, in flight, or dead-lettered, per task.

    ingested = labelled (teacher + student) + dead-lettered by workers + in flight

In flight means inside a chunk waiting in the teacher or student queue, or
reserved by a worker and not yet acknowledged (it is redelivered if that
worker dies). Counters move once per chunk (``records.commit_chunk``), so a
redelivered chunk does not count twice. A gap is a loss (or, negative, a
double count); audit lists it and exits non-zero.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import redis

from labelq import keyspace
from labelq.keyspace import Stat
from labelq.settings import Settings
from labelq.status import known_tasks

CHUNK_QUEUES = ("teacher", "student")


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


def in_flight_messages(settings: Settings, client: redis.Redis) -> Iterator[dict[str, Any]]:
    """Every chunk message waiting in a queue or reserved by a worker."""
    for queue in CHUNK_QUEUES:
        for raw in client.lrange(keyspace.queue(settings, queue), 0, -1):
            chunk = decode_chunk_message(raw)
            if chunk is not None:
                yield chunk
    for raw in client.hvals(keyspace.unacked(settings)):
        chunk = decode_chunk_message(raw)
        if chunk is not None:
            yield chunk


def in_flight_sessions(settings: Settings, client: redis.Redis) -> Counter[str]:
    counts: Counter[str] = Counter()
    for chunk in in_flight_messages(settings, client):
        counts[str(chunk.get("task"))] += len(chunk["sessions"])
    return counts


def audit(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """Per task: the balance and its gap (0 when every session is accounted for)."""
    flying = in_flight_sessions(settings, client)
    tasks = {}
    for task in known_tasks(settings, client):
        raw: dict[bytes, bytes] = client.hgetall(keyspace.stats(settings, task))  # type: ignore[assignment]
        stats = {k.decode(): int(v) for k, v in raw.items()}
        labelled = stats.get(Stat.LABELLED_TEACHER, 0) + stats.get(Stat.LABELLED_STUDENT, 0)
        dead = stats.get(Stat.DEAD_TEACHER, 0) + stats.get(Stat.DEAD_STUDENT, 0)
        ingested = stats.get(Stat.INGESTED, 0)
        gap = ingested - labelled - dead - flying[task]
        tasks[task] = {"ingested": ingested, "labelled": labelled, "labelled_teacher": stats.get(Stat.LABELLED_TEACHER, 0),
                       "labelled_student": stats.get(Stat.LABELLED_STUDENT, 0), "dead_lettered": dead,
                       "in_flight": flying[task], "gap": gap}
    return {"ok": all(t["gap"] == 0 for t in tasks.values()), "tasks": tasks}
