"""A Redis with months of history and a little work in flight, and the Redis commands a call makes there.

Shared by ``tests/integration/test_ops_cost.py`` (small histories) and ``bench/_scale_ops.py`` (1M keys):

* :func:`fill_history`: the keys a deployment accumulates per session and per chunk (done markers,
  teacher cache entries, escalation decisions, chunk attempt counters) and members of the dedupe
  sets, written with pipelines (MSET/SADD of 1,000 at a time);
* :func:`add_work`: for each task, chunks enqueued as the producer does (the task registry, counters and
  dedupe claims with them), one taken by a worker (kombu's ``unacked`` hash), one parked, and one
  redrive chunk in the outbox: what ``labelq audit`` must find;
* :func:`redis_commands`: the commands a call sends, from the server's ``INFO commandstats`` (the
  counting's own INFO and CONFIG RESETSTAT left out).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis

from labelq import keyspace
from labelq.dedupe import dedupe_keys
from labelq.hashing import chunk_id
from labelq.keyspace import Stat
from labelq.queue.app import create_app
from labelq.queue.publish import ChunkPublisher, OutgoingChunk, envelope
from labelq.schemas import chunk_json
from labelq.settings import Settings

TASKS = ("session-label", "support-triage", "review-topics")
BATCH = 1_000
_OWN = ("config|resetstat",)  # what the counting itself sends (its INFO commandstats is counted after it reads)


def _hash(*parts: object) -> bytes:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=16).digest()


def fill_history(settings: Settings, client: redis.Redis, keys: int, tasks: Sequence[str] = TASKS, *,
                 start: int = 0) -> None:
    """History keys ``start`` .. ``keys`` - 1 (the per-chunk and per-session markers, spread over ``tasks``)
    and as many sessions ingested and labelled long ago: dedupe-set members and the counters that balance
    them. Written in pipelined batches; call again with ``start`` = the previous ``keys`` to grow it."""
    families = (
        lambda i: keyspace.chunk_done(settings, ("teacher", "student")[i % 2], f"c{i:09d}"),
        lambda i: keyspace.teacher_cache(settings, "gpt-4o", "p1", _hash("cache", i).hex()),
        lambda i: keyspace.escalation_decision(settings, f"c{i:09d}"),
        lambda i: keyspace.chunk_attempts(settings, "student", f"a{i:09d}"),
    )
    with client.pipeline(transaction=False) as pipe:
        for first in range(start, keys, BATCH):
            stop = min(keys, first + BATCH)
            pipe.mset({families[i % len(families)](i): b"1" for i in range(first, stop)})
            task = tasks[(first // BATCH) % len(tasks)]
            bucket = dedupe_keys(settings, task).current  # claims and their count, as enqueue.lua keeps them
            pipe.sadd(bucket.set_key, *(_hash("seen", i) for i in range(first, stop)))
            pipe.incrby(bucket.count_key, stop - first)
            pipe.hincrby(keyspace.stats(settings, task), Stat.INGESTED, stop - first)
            pipe.hincrby(keyspace.stats(settings, task), Stat.LABELLED_STUDENT, stop - first)
            if len(pipe) >= 50:
                pipe.execute()
        pipe.execute()


def add_work(settings: Settings, client: redis.Redis, tasks: Sequence[str] = TASKS,
             sessions_per_chunk: int = 4) -> dict[str, int]:
    """Per task: 3 chunks enqueued by a producer (teacher, student, student), of which one student chunk is
    then parked and one taken by a worker (left unacknowledged), and one redrive chunk in the outbox.
    Returns the sessions in flight per task."""
    app = create_app(settings)
    in_flight = {}
    with ChunkPublisher(settings, app, client) as publisher:
        for t, task in enumerate(tasks):
            chunks, hashes = [], []
            for c, queue in enumerate(("teacher", "student", "student")):
                triples = []
                for s in range(sessions_per_chunk):
                    h = _hash("work", task, c, s).hex()
                    triples.append((f"{task}-{c}-{s}", h, orjson.dumps({"session_id": f"{task}-{c}-{s}", "events": [t, c, s]})))
                    hashes.append(h)
                cid = chunk_id(task, (h for _, h, _ in triples))
                chunks.append((queue, OutgoingChunk(cid, task, len(triples), chunk_json(task, "steady", triples, cid))))
            assert publisher.enqueue(task, chunks, hashes) == set()
            in_flight[task] = len(hashes)
    student = keyspace.queue(settings, "student")
    for task in tasks:
        mine = [raw for raw in client.lrange(student, 0, -1) if f" task={task} ".encode() in raw]
        taken, parked = mine[-1], mine[0]
        # A worker took one (kombu: off the list, into the unacked hash) ...
        client.lrem(student, 1, taken)
        tag = orjson.loads(taken)["properties"]["delivery_tag"]
        client.hset(keyspace.unacked(settings), tag, orjson.dumps([orjson.loads(taken), "", "student"]))
        client.zadd(keyspace.unacked_index(settings), {tag: 1.0})
        # ... and parked the other (its task has no adapter yet).
        client.lrem(student, 1, parked)
        client.lpush(keyspace.parked(settings, "student", task), parked)
    for task in tasks:  # a redrive counted out of the dead letters, not yet published
        triples = [(f"{task}-r", _hash("redrive", task).hex(), orjson.dumps({"session_id": f"{task}-r"}))]
        cid = chunk_id(task, (h for _, h, _ in triples), parent="redrive")
        chunk = orjson.loads(chunk_json(task, "redrive", triples, cid))
        client.hset(keyspace.redrive_outbox(settings), cid, orjson.dumps({"queue": "teacher", "chunk": chunk}))
        client.hincrby(keyspace.stats(settings, task), Stat.INGESTED, 1)
        in_flight[task] += 1
    return in_flight


def chunk_envelope(settings: Settings, queue: str, task: str, sessions: int, seed: str = "x") -> bytes:
    """One chunk message as the producer pushes it (for tests that place messages by hand)."""
    triples = [(f"{seed}-{s}", _hash(seed, s).hex(), orjson.dumps({"session_id": f"{seed}-{s}"}))
               for s in range(sessions)]
    cid = chunk_id(task, (h for _, h, _ in triples))
    return envelope(create_app(settings), queue, OutgoingChunk(cid, task, sessions,
                                                               chunk_json(task, "steady", triples, cid)), "test")


def _calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def redis_commands(client: redis.Redis, call: Callable[[], object]) -> int:
    """The Redis commands ``call()`` sends (the server's count: a private server, nothing else on it)."""
    client.config_resetstat()
    call()
    return sum(n for name, n in _calls(client).items() if name not in _OWN)
