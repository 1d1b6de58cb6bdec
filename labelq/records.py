"""Writing a chunk's output: label records and dead letters, then counting them once.

Objects are keyed by chunk id, so a chunk redelivered before its commit
overwrites its own output and never duplicates it; one redelivered after its
commit writes nothing. A chunk whose inputs are kept (the teacher's: curation
trains on them) also gets an entry in the write log (``written/<stage>/<task>/``,
named by the time it was written, after its objects), so curation reads only
the chunks written since its last bucket. Counters move only the first time a chunk is
committed (a ``done`` marker set atomically with them), so status and audit
count each session once however often its chunk ran.
"""

from __future__ import annotations

from collections import Counter

import orjson
import redis

from labelq import keyspace, lua
from labelq.schemas import DeadLetter, LabelRecord, SessionItem, encode_jsonl
from labelq.settings import Settings
from labelq.store import ObjectStore


def commit_chunk(
    settings: Settings, store: ObjectStore, client: redis.Redis, *, stage: str, task: str,
    chunk_id: str, records: list[LabelRecord], dead_letters: list[DeadLetter],
    extra_counts: dict[str, int] | None = None, inputs: list[SessionItem] | None = None,
) -> bool:
    """Write the chunk's objects, then count them unless this chunk was committed before.

    A chunk committed before (redelivered after its commit, before its ack) writes
    nothing: a second run may have ended differently (a session labelled that the
    first run dead-lettered), and its objects would contradict the counts.
    """
    done = keyspace.chunk_done(settings, stage, chunk_id)
    if client.exists(done):
        return False
    if inputs:
        store.put_bytes(keyspace.inputs(stage, task, chunk_id), b"".join(
            orjson.dumps({"session_id": s.session_id, "content_hash": s.content_hash, "payload": s.require_payload()})
            + b"\n" for s in inputs))
    if records:
        store.put_bytes(keyspace.labels(stage, task, chunk_id), encode_jsonl(list(records)))
    if dead_letters:
        store.put_bytes(keyspace.dead_letters(stage, task, chunk_id), encode_jsonl(list(dead_letters)))
    if inputs and records:  # last: an entry in the write log names objects that exist
        store.put_bytes(keyspace.written(stage, task, chunk_id, keyspace.write_stamp()), b"")
    stats = keyspace.stats(settings, task)
    args: list[str | int] = [keyspace.CHUNK_DONE_TTL_S, task]
    if records:
        args += [stats, keyspace.labelled_stat(stage), len(records)]
    if dead_letters:
        args += [stats, keyspace.dead_stat(stage), len(dead_letters)]
    for reason, n in Counter(d.reason for d in dead_letters).items():
        args += [keyspace.dlq_reasons(settings), reason, n, keyspace.dlq_task(settings, task), reason, n]
    for name, n in (extra_counts or {}).items():
        args += [stats, name, n]
    return bool(lua.script(client, "commit_chunk")(keys=[done, keyspace.task_registry(settings)], args=args))
