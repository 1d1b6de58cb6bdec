"""Claim check: a large session's payload lives in the object store, its chunk message carries a reference.

A session whose JSON is larger than ``claim_check_bytes`` (32 KiB by default)
is written to ``payloads/<task>/<h2>/<content hash>.json``
(:func:`labelq.keyspace.payload`) before the Redis transaction that enqueues
its chunk, and the chunk carries ``payload_ref`` (that key) instead of
``payload``. So a chunk message is at most ``chunk_size`` x
``claim_check_bytes`` of payload whatever the sessions weigh, and a queue's
bytes are bounded by the byte high-water mark (``labelq.queue.publish``).
Smaller sessions travel inline, in messages unchanged from before.

The key is a function of the task and the session's content hash: a retried
or repeated write (a producer run again after a kill, two producers, a
redrive) writes the same object with the same content, and a message cannot
point a worker at any other object (``ChunkMessage`` refuses a reference that
is not the session's own key).

Workers resolve the references of a chunk when they take it
(:func:`resolve_chunk`, called by ``labelq.queue.task.ChunkTask``):

* the store unreachable (``ServiceUnavailable``, an ``OSError``) is raised:
  an outage the worker waits out (``labelq.queue.policy``), the chunk going
  back to its queue uncounted;
* an object that is missing (deleted by the retention rule, lost) dead-letters
  its session ``payload_missing``, the key in the letter's detail; one that
  is not the session (not a JSON object, another content hash) dead-letters it
  ``payload_corrupt``. The rest of the chunk is labelled.

A resolved session keeps its reference: a hand-back, an escalation, a
bisected half republish the reference, never the payload
(:meth:`labelq.schemas.SessionItem.wire_part`), and a redrive checks a large
dead-lettered payload in again (:func:`wire_part`). Label inputs (``inputs/``)
and dead letters keep the payload itself, so curation and redrive never
depend on a payload object.

Lifetime: payload objects are deleted by age, ``claim_check_retention_days``
(30) after they were last written: on S3 by a lifecycle rule on the
``payloads/`` prefix (docker-compose's MinIO bootstrap sets one), on any store
by ``labelq payloads prune`` (:func:`prune`; run it daily). They are not
deleted when a label is committed: a session can still be on its way
elsewhere then (a student publishes its escalations before it commits), and a
redelivered chunk must find its payloads again. A session still queued when
its payload expires is dead-lettered ``payload_missing``: keep the retention
above the longest time a chunk may wait (a teacher paused on a monthly budget
waits up to a month).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from labelq import keyspace
from labelq.errors import ObjectNotFound
from labelq.hashing import chunk_id, content_hash
from labelq.logging import get_logger
from labelq.schemas import ChunkMessage, DeadLetter, PayloadRef, SessionItem
from labelq.settings import Settings
from labelq.store import ObjectStore

log = get_logger(__name__)

PAYLOAD_MISSING = "payload_missing"
PAYLOAD_CORRUPT = "payload_corrupt"
_IO_THREADS = 8  # payload objects read or written at once (an S3 request each)


def claim_checked(settings: Settings, size: int) -> bool:
    """Whether a session of ``size`` bytes of JSON goes to the store (its message carries a reference)."""
    return size > settings.claim_check_bytes


def _each(fn: Any, items: Sequence[Any]) -> list[Any]:
    """``fn`` over ``items``, a few at a time; the first exception is raised."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(_IO_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


def check_in(store: ObjectStore, task: str, sessions: Sequence[tuple[str, bytes]]) -> list[PayloadRef]:
    """Write each ``(content hash, JSON)`` payload to its key (overwriting the same content, which
    restarts its retention); their references, in order. A store failure is raised."""

    def put(session: tuple[str, bytes]) -> PayloadRef:
        ref = keyspace.payload(task, session[0])
        store.put_bytes(ref, session[1])
        return PayloadRef(ref)

    return _each(put, sessions)


def wire_part(settings: Settings, store: ObjectStore, task: str, digest: str,
              payload: dict[str, Any]) -> dict[str, Any] | PayloadRef:
    """A payload as a message carries it: itself, or checked in and referenced when it is large."""
    raw = orjson.dumps(payload)
    if not claim_checked(settings, len(raw)):
        return payload
    return check_in(store, task, [(digest, raw)])[0]


@dataclass(frozen=True, slots=True)
class _Fetched:
    payload: dict[str, Any] | None
    reason: str = ""  # PAYLOAD_MISSING or PAYLOAD_CORRUPT when payload is None
    detail: str = ""


def _fetch(store: ObjectStore, item: SessionItem) -> _Fetched:
    ref = str(item.payload_ref)
    try:
        raw = store.get_bytes(ref)
    except ObjectNotFound:
        return _Fetched(None, PAYLOAD_MISSING, f"claim-checked payload {ref} is not in {store.url} (deleted by "
                        "the retention rule, claim_check_retention_days, or lost)")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _Fetched(None, PAYLOAD_CORRUPT, f"claim-checked payload {ref} is not JSON: {exc}"[:500])
    if not isinstance(payload, dict) or content_hash(payload) != item.content_hash:
        return _Fetched(None, PAYLOAD_CORRUPT, f"claim-checked payload {ref} does not hash to the session's "
                        f"content hash {item.content_hash}")
    return _Fetched(payload)


def read_payload(store: ObjectStore, item: SessionItem) -> dict[str, Any] | None:
    """The session's payload: inline, or read through its reference; None when the object is missing or
    is not the session. A store failure is raised."""
    if item.payload is not None:
        return item.payload
    return _fetch(store, item).payload


def resolve_chunk(store: ObjectStore, chunk: ChunkMessage, stage: str) -> tuple[ChunkMessage | None, list[DeadLetter]]:
    """``chunk`` with every reference resolved (its sessions keep their references), without the sessions
    whose payload is missing or corrupt, and their dead letters; None when no session is left.

    A store failure (an outage) is raised: nothing is dead-lettered for it.
    """
    todo = [s for s in chunk.sessions if s.payload is None]
    if not todo:
        return chunk, []
    started = time.monotonic()
    fetched = dict(zip((s.content_hash for s in todo), _each(lambda s: _fetch(store, s), todo), strict=True))
    kept: list[SessionItem] = []
    letters: list[DeadLetter] = []
    for s in chunk.sessions:
        got = fetched.get(s.content_hash)
        if got is None:  # inline
            kept.append(s)
        elif got.payload is not None:
            kept.append(s.model_copy(update={"payload": got.payload}))
        else:
            letters.append(DeadLetter(reason=got.reason, detail=got.detail, stage=stage, task=chunk.task,
                                      session_id=s.session_id, content_hash=s.content_hash,
                                      chunk_id=chunk.chunk_id))
    log.debug("payloads_resolved", sessions=len(todo), unresolved=len(letters),
              seconds=round(time.monotonic() - started, 3))
    return (chunk.model_copy(update={"sessions": kept}) if kept else None), letters


def letters_chunk_id(chunk: ChunkMessage, letters: Sequence[DeadLetter]) -> str:
    """The id under which a chunk's unresolvable sessions are committed (their dead letters, counted once
    however often the chunk is delivered); the rest of the chunk commits under its own id."""
    return chunk_id(chunk.task, (str(d.content_hash) for d in letters), parent=f"{PAYLOAD_MISSING}:{chunk.chunk_id}")


@dataclass
class PruneSummary:
    kept: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "deleted": self.deleted, "deleted_bytes": self.deleted_bytes,
                "dry_run": self.dry_run}


def prune(settings: Settings, store: ObjectStore, *, older_than_days: float | None = None,
          task: str | None = None, dry_run: bool = False, now: float | None = None,
          keep_tasks: Collection[str] = ()) -> PruneSummary:
    """Delete the payload objects last written more than ``older_than_days`` (default
    ``claim_check_retention_days``) ago, of every task or of ``task``; never those of ``keep_tasks``
    (tasks with chunks parked until they have an adapter: their wait has no bound)."""
    days = settings.claim_check_retention_days if older_than_days is None else older_than_days
    cutoff = (time.time() if now is None else now) - days * 86_400
    summary = PruneSummary(dry_run=dry_run)
    kept_prefixes = tuple(keyspace.payloads_prefix(t) for t in keep_tasks)
    for entry in store.list_modified(keyspace.payloads_prefix(task)):
        if entry.modified >= cutoff or (kept_prefixes and entry.key.startswith(kept_prefixes)):
            summary.kept += 1
            continue
        if not dry_run:
            store.delete(entry.key)
        summary.deleted += 1
        summary.deleted_bytes += entry.size
    log.info("payloads_pruned", older_than_days=days, **summary.to_dict())
    return summary
