"""Helpers shared by tests: waiting, store rows, queued and in-flight chunks, dedupe claims, dead letters."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.dedupe import dedupe_keys
from labelq.queue import inspect
from labelq.schemas import ChunkMessage, decode_jsonl
from labelq.settings import Settings
from labelq.store import open_store


def wait_until(condition: Callable[[], bool], timeout_s: float, why: str, poll_s: float = 0.2) -> float:
    """Poll ``condition``; fail the test with ``why`` after ``timeout_s``. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {why}")


def queued_chunks(settings: Settings, client: redis.Redis, queue: str) -> list[ChunkMessage]:
    """Decode every Celery message waiting in ``queue`` (oldest first) as a chunk."""
    return [ChunkMessage.decode(c) for c in inspect.queued_chunks(settings, client, queue)]


def queued_session_ids(settings: Settings, client: redis.Redis) -> list[str]:
    """Session ids in every chunk waiting on the teacher and student queues (routing splits them)."""
    return [s.session_id for q in ("teacher", "student") for c in queued_chunks(settings, client, q)
            for s in c.sessions]


def claimed(settings: Settings, client: redis.Redis, task: str) -> int:
    """Content hashes in every dedupe set of ``task`` that a lookup checks (``labelq.dedupe``)."""
    return sum(int(client.scard(key)) for key in dedupe_keys(settings, task).lookup)


def keys_without_ttl(settings: Settings, client: redis.Redis) -> set[str]:
    """Every key of the settings' prefix that never expires."""
    keys = list(client.scan_iter(match=settings.redis_key_prefix + "*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.ttl(key)
    return {key.decode() for key, ttl in zip(keys, pipe.execute(), strict=True) if ttl == -1}


def jsonl_objects(settings: Settings, prefix: str) -> list[dict[str, Any]]:
    """Every JSONL row of every object under ``prefix`` in the settings' store."""
    store = open_store(settings)
    rows: list[dict[str, Any]] = []
    for k in store.list(prefix):
        rows.extend(decode_jsonl(store.get_bytes(k)))
    return rows


def unacked_chunks(settings: Settings, client: redis.Redis) -> list[ChunkMessage]:
    """Messages a worker reserved but did not ack: redelivered later."""
    return [ChunkMessage.decode(c) for c in inspect.unacked_chunks(settings, client)]


def dead_letters(settings: Settings, stage: str = "ingest") -> list[dict[str, Any]]:
    return jsonl_objects(settings, keyspace.dead_letters_prefix(stage))


def write_jsonl(path: Path, sessions: list[dict[str, Any]], extra_lines: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    path.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in sessions) + b"".join(
        line + b"\n" for line in extra_lines))
    return path
