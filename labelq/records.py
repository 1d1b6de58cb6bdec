"""Writing a chunk's output: label records and dead letters, then counting them once.

Objects are keyed by chunk id, so a redelivered chunk overwrites its own
output and never duplicates it. Counters move only the first time a chunk is
committed (a ``done`` marker set atomically with them), so status and audit
count each session once however often its chunk ran.
"""

from __future__ import annotations

from collections import Counter

import orjson
import redis

from labelq.schemas import DeadLetter, LabelRecord, SessionItem, encode_jsonl
from labelq.settings import Settings
from labelq.store import ObjectStore, key, segment

_COMMIT_LUA = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then return 0 end
for i = 2, #ARGV, 3 do
  redis.call('HINCRBY', ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]))
end
return 1
"""
DONE_TTL_S = 30 * 86_400


def labels_key(source: str, task: str, chunk_id: str) -> str:
    return key("labels", source, segment(task), f"{segment(chunk_id)}.jsonl")


def inputs_key(stage: str, task: str, chunk_id: str) -> str:
    """The sessions a chunk labelled (curation turns them into training prompts)."""
    return key("inputs", stage, segment(task), f"{segment(chunk_id)}.jsonl")


def dead_letters_key(stage: str, task: str, chunk_id: str) -> str:
    return key("deadletter", stage, segment(task), f"{segment(chunk_id)}.jsonl")


def commit_chunk(
    settings: Settings, store: ObjectStore, client: redis.Redis, *, stage: str, task: str,
    chunk_id: str, records: list[LabelRecord], dead_letters: list[DeadLetter],
    extra_counts: dict[str, int] | None = None, inputs: list[SessionItem] | None = None,
) -> bool:
    """Write the chunk's objects, then count them unless this chunk was committed before."""
    if inputs:
        store.put_bytes(inputs_key(stage, task, chunk_id), b"".join(
            orjson.dumps({"session_id": s.session_id, "content_hash": s.content_hash, "payload": s.payload})
            + b"\n" for s in inputs))
    if records:
        store.put_bytes(labels_key(stage, task, chunk_id), encode_jsonl(list(records)))
    if dead_letters:
        store.put_bytes(dead_letters_key(stage, task, chunk_id), encode_jsonl(list(dead_letters)))
    stats = settings.redis_key("stats", task)
    args: list[str | int] = [DONE_TTL_S]
    if records:
        args += [stats, f"labelled_{stage}", len(records)]
    if dead_letters:
        args += [stats, f"dead_{stage}", len(dead_letters)]
    for reason, n in Counter(d.reason for d in dead_letters).items():
        args += [settings.redis_key("dlq", "reasons"), reason, n,
                 settings.redis_key("dlq", "task", task), reason, n]
    for name, n in (extra_counts or {}).items():
        args += [stats, name, n]
    done = settings.redis_key("done", stage, chunk_id)
    return bool(client.eval(_COMMIT_LUA, 1, done, *args))
