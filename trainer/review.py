"""The human review gate: a bucket curated with ``curation.require_review`` waits under ``_REVIEW``.

``labelq review`` approves it (``_READY`` appears; the trainer takes it),
rejects it (``_REJECTED``; never trained), or applies edits first: a JSONL
file of ``{"content_hash" | "session_id", "label"}`` or ``{..., "drop": true}``.
Edited labels are human labels: they are checked against the contract, written
under ``labels/human/`` (for export) and replace the bucket's rows, where every
later training set keeps them (human rows are always selected, and beat a
teacher's label of the same session from any bucket). A review covers the
bucket's own rows: the labels that were new when it was curated.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from labelq import keyspace
from labelq.contract import check
from labelq.errors import ConfigError, DecodeError
from labelq.keyspace import BucketFile, bucket_file
from labelq.schemas import LabelRecord, decode_jsonl, encode_jsonl
from labelq.spec import TaskSpec
from labelq.store import ObjectStore
from trainer.curation import Manifest, ReviewChanges, read_rows, write_bucket


def pending(store: ObjectStore, task: str) -> list[str]:
    """Bucket versions of ``task`` that wait for review."""
    marks: dict[str, set[str]] = {}
    for k in store.list(keyspace.curated_prefix(task)):
        parsed = keyspace.parse_bucket_file(k)
        if parsed is not None:
            marks.setdefault(parsed[1], set()).add(parsed[2])
    return sorted(v for v, files in marks.items()
                  if BucketFile.REVIEW in files and not files & {BucketFile.READY, BucketFile.REJECTED})


def _require_pending(store: ObjectStore, task: str, version: str) -> None:
    if version not in pending(store, task):
        raise ConfigError(f"{task} {version} is not waiting for review (see `labelq review {task}`)")


def approve(store: ObjectStore, task: str, version: str) -> None:
    _require_pending(store, task, version)
    store.put_bytes(bucket_file(task, version, BucketFile.READY), b"")


def reject(store: ObjectStore, task: str, version: str, reason: str) -> None:
    _require_pending(store, task, version)
    store.put_bytes(bucket_file(task, version, BucketFile.REJECTED), orjson.dumps({"reason": reason}))


def parse_edits(data: bytes) -> list[dict[str, Any]]:
    try:
        edits = decode_jsonl(data)
    except DecodeError as exc:
        raise ConfigError(f"edits file: {exc}") from exc
    for n, edit in enumerate(edits, 1):
        if not isinstance(edit, dict) or not ({"content_hash", "session_id"} & set(edit)):
            raise ConfigError(f"edits file line {n}: needs content_hash or session_id")
        if not edit.get("drop") and not isinstance(edit.get("label"), str):
            raise ConfigError(f"edits file line {n}: needs a label (or \"drop\": true)")
    return edits


def apply_edits(store: ObjectStore, spec: TaskSpec, version: str, edits: list[dict[str, Any]]) -> ReviewChanges:
    """Rewrite a pending bucket with human edits and approve it; return what changed."""
    _require_pending(store, spec.name, version)
    rows = read_rows(store, spec.name, version)
    by_hash = {r.content_hash: r for r in rows}
    by_session = {r.session_id: r.content_hash for r in rows}
    edited = dropped = 0
    human: list[LabelRecord] = []
    for n, edit in enumerate(edits, 1):
        target = edit.get("content_hash") or by_session.get(str(edit.get("session_id")))
        if target not in by_hash:
            raise ConfigError(f"edits file line {n}: no such session in {spec.name} {version}")
        if edit.get("drop"):
            del by_hash[target]
            dropped += 1
            continue
        verdict = check(edit["label"], spec.contract)
        if not verdict.ok:
            raise ConfigError(f"edits file line {n}: label breaks the output contract ({verdict.reason})")
        row = replace(by_hash[target], label=verdict.label, source="human", label_id=f"review:{version}:{target}")
        by_hash[target] = row
        human.append(LabelRecord(session_id=row.session_id, content_hash=row.content_hash, task=spec.name,
                                 label=row.label, source="human", model="review", prompt_version=spec.prompt_version,
                                 words=verdict.words, chunk_id=f"review-{version}"))
        edited += 1
    if human:
        store.put_bytes(keyspace.review_labels(spec.name, version), encode_jsonl(list(human)))
    manifest = Manifest.from_dict(store.get_bytes(bucket_file(spec.name, version, BucketFile.MANIFEST)))
    changed = ReviewChanges(edited=edited, dropped=dropped)
    store.delete(bucket_file(spec.name, version, BucketFile.REVIEW))
    write_bucket(store, spec, version, sorted(by_hash.values(), key=lambda r: r.content_hash),
                 dropped={**manifest.dropped, "review_drop": dropped}, labels_seen=manifest.labels_seen,
                 marker=BucketFile.READY, review=changed, watermark=manifest.watermark,
                 earlier=[s for s in manifest.segments if s.version != version], max_rows=manifest.max_rows)
    return changed
