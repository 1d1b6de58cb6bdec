"""Redis bytes per ingested session, inside the dedupe window and after it (for ``bench/scale.py``).

:func:`redis_bytes_per_session` starts its own redis-server (``bench._common.private_redis``) and
measures ``INFO memory`` ``used_memory`` deltas over ``n`` sessions, family by family, each written by
the code that writes it in production:

* **dedupe**: ``n`` sessions enqueued through ``ChunkPublisher.enqueue`` (claim in the day's bucket,
  its count, the stats counters; chunks of 64, 16 per transaction), then the queue lists deleted
  (what workers do as they drain them): the claim is what stays;
* **done markers**: one per chunk (``labelq.records.commit_chunk``), 30 days;
* **escalation decisions**: one per student chunk (``escalation_grant.lua``), 30 days;
* **teacher cache**: one entry per teacher label (``TEACHER_SHARE`` of the sessions: the 2% sample
  and up to 5% escalated), 90 days, the key and value ``workers.teacher.books`` writes.

Then the same ``n`` sessions again, on their own key prefix, with a window just longer than the
enqueue took, of 1-second buckets: the dedupe is measured inside the window, and again once the window
has passed and Redis expired the buckets (back to the constant per-task counters).
``held_gb_at_1m_per_day`` is what those families hold at 1M sessions a day once each has reached its
TTL (dedupe: the window and on average half a bucket more, 31.5 days).

    python -m bench._scale_redis 1000000
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emit, private_redis
from labelq import keyspace, lua
from labelq.dedupe import DAY_S, live_buckets
from labelq.hashing import chunk_id
from labelq.keyspace import Stat
from labelq.queue.app import create_app
from labelq.queue.publish import ChunkPublisher, OutgoingChunk
from labelq.records import commit_chunk
from labelq.settings import Settings
from labelq.store import LocalStore

TASK = "session-label"
CHUNK = 64
BATCH_CHUNKS = 16
TEACHER_SHARE = 0.07  # the 2% sample, and students' escalations (at most 5% of the rest)
LABEL = b'{"label":"Searches running shoes and pays by card","words":6}'
TEACHER_CACHE_DAYS = 90  # teacher_cache_ttl_s's default


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _enqueue(settings: Settings, client: redis.Redis, n: int) -> list[str]:
    """``n`` fresh sessions through the producer's enqueue; the queue lists deleted after. Chunk ids."""
    body = b'{"chunk_id":"c","task":"session-label","route":"steady","sessions":[]}'  # dropped with the queue
    ids: list[str] = []
    with ChunkPublisher(settings, create_app(settings), client) as publisher:
        for start in range(0, n, CHUNK * BATCH_CHUNKS):
            hashes = [uuid.uuid4().hex for _ in range(min(CHUNK * BATCH_CHUNKS, n - start))]
            chunks = []
            for i in range(0, len(hashes), CHUNK):
                cid = chunk_id(TASK, hashes[i:i + CHUNK])
                ids.append(cid)
                chunks.append(("student", OutgoingChunk(cid, TASK, len(hashes[i:i + CHUNK]), body)))
            assert publisher.enqueue(TASK, chunks, hashes) == set()
            client.delete(keyspace.queue(settings, "student"))  # drained by workers
    return ids


def _worker_keys(settings: Settings, client: redis.Redis, chunk_ids: list[str], n: int) -> dict[str, int]:
    """The keys workers leave per chunk and per teacher label; bytes each family took."""
    took = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp))
        before = _used(client)
        for cid in chunk_ids:  # the marker is all a chunk with no records leaves in Redis
            commit_chunk(settings, store, client, stage="student", task=TASK, chunk_id=cid, records=[],
                         dead_letters=[], extra_counts={Stat.LABELLED_STUDENT: CHUNK})
        took["done_markers"] = _used(client) - before
    before = _used(client)
    grant = lua.script(client, "escalation_grant")
    for cid in chunk_ids:
        grant(keys=[keyspace.escalation_decision(settings, cid), keyspace.escalation(settings, TASK)],
              args=[CHUNK, 3, settings.student_escalation_share, keyspace.ESCALATION_DECISION_TTL_S])
    took["escalation_decisions"] = _used(client) - before
    before = _used(client)
    pipe = client.pipeline(transaction=False)
    for i in range(int(n * TEACHER_SHARE)):
        pipe.set(keyspace.teacher_cache(settings, settings.teacher_model, "v1", uuid.uuid4().hex), LABEL,
                 ex=settings.teacher_cache_ttl_s)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    took["teacher_cache"] = _used(client) - before
    return took


def redis_bytes_per_session(n: int) -> dict[str, Any]:
    """Redis bytes per ingested session inside the dedupe window, by family, and after the window."""
    started = time.monotonic()
    with private_redis() as url, tempfile.TemporaryDirectory() as tmp:
        client = redis.Redis.from_url(url)
        settings = Settings(state_dir=Path(tmp), redis_url=url, redis_key_prefix="scale:",  # type: ignore[arg-type]
                            store_url=f"file://{tmp}/store", redis_memory_reserve_share=0)
        _enqueue(settings, client, CHUNK * BATCH_CHUNKS)  # scripts loaded, connections open: not counted
        client.delete(*(k for b in live_buckets(settings, TASK) for k in (b.set_key, b.count_key)))
        base = _used(client)
        enqueue_started = time.monotonic()
        chunk_ids = _enqueue(settings, client, n)
        enqueue_s = time.monotonic() - enqueue_started
        dedupe = _used(client) - base
        workers = _worker_keys(settings, client, chunk_ids, n)

        # Again with a window just longer than the enqueue, of 1-second buckets, on its own prefix:
        # every claim is inside the window when measured, then the buckets really expire.
        window_s = max(2, math.ceil(1.5 * enqueue_s))
        short = settings.model_copy(update={"redis_key_prefix": "short:", "dedupe_window_days": window_s / DAY_S,
                                            "dedupe_bucket_s": 1})
        base_short = _used(client)
        _enqueue(short, client, n)
        inside_short = _used(client) - base_short
        deadline = time.monotonic() + window_s + 60
        while next(client.scan_iter(match="short:seen:*", count=10_000), None) and time.monotonic() < deadline:
            time.sleep(0.5)  # Redis expires the buckets (its active expiry frees them within a second or so)
        after = _used(client) - base_short
        left = Counter(k.decode().split(":")[1] for k in client.scan_iter(match="short:*", count=10_000))
    per = {name: round(b / n, 1) for name, b in {"dedupe": dedupe, **workers}.items()}
    held_days = {"dedupe": settings.dedupe_window_days + settings.dedupe_bucket_s / DAY_S / 2, "done_markers": keyspace.CHUNK_DONE_TTL_S / DAY_S,
                 "escalation_decisions": keyspace.ESCALATION_DECISION_TTL_S / DAY_S,
                 "teacher_cache": TEACHER_CACHE_DAYS}
    held_gb = sum(per[name] * days for name, days in held_days.items()) * 1_000_000 / 1e9
    return {
        "n": n,
        "bytes_per_session": round(sum(per.values()), 1),
        "bytes_per_session_by_family": per,
        "dedupe_window_days": settings.dedupe_window_days,
        "held_gb_at_1m_per_day": round(held_gb, 2),
        "short_window_s": window_s,
        "short_window_inside_bytes_per_session": round(inside_short / n, 1),
        "short_window_after_bytes_per_session": round(after / n, 3),
        # what is left: the task's counters, kombu's bindings, one enqueue's reply memo per 1,024 sessions (1 h)
        "short_window_keys_left": dict(sorted(left.items())),
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    emit(redis_bytes_per_session(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000), as_json="--json" in sys.argv)
