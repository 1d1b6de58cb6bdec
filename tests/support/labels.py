"""Label records written straight into a store, as the workers would leave them (no Redis, no worker)."""

from __future__ import annotations

import orjson

from labelq import keyspace
from labelq.schemas import LabelRecord
from labelq.store import ObjectStore

TASK = "session-label"


def label_record(content_hash: str, label: str, source: str = "teacher",
                 at: str = "2026-01-01T00:00:00") -> LabelRecord:
    return LabelRecord(session_id=f"s-{content_hash}", content_hash=content_hash, task=TASK, label=label,
                       source=source, model="m", prompt_version="p", words=len(label.split()), chunk_id="c",
                       created_at=at)


def put_teacher_labels(store: ObjectStore, records: list[LabelRecord], chunk_id: str = "c1", *,
                       stamp: str | None = None, logged: bool = True) -> None:
    """The teacher's labels of one chunk and the inputs it kept (curation trains on both), then its
    write-log entry at ``stamp`` (default: now), as ``labelq.records.commit_chunk`` leaves them;
    ``logged=False``: no entry, as a chunk written before the write log existed."""
    store.put_bytes(keyspace.labels("teacher", TASK, chunk_id),
                    b"".join(orjson.dumps(r.model_dump(mode="json")) + b"\n" for r in records))
    store.put_bytes(keyspace.inputs("teacher", TASK, chunk_id), b"".join(
        orjson.dumps({"session_id": r.session_id, "content_hash": r.content_hash, "payload": {"x": i}}) + b"\n"
        for i, r in enumerate(records)))
    if logged:
        store.put_bytes(keyspace.written("teacher", TASK, chunk_id, stamp or keyspace.write_stamp()), b"")
