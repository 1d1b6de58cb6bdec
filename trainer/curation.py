"""Curation: teacher and human labels -> a versioned dataset bucket the trainer picks up.

    curated/<task>/<version>/train.jsonl   80%
    curated/<task>/<version>/val.jsonl     20% (split by content hash: the same session
                                           always falls on the same side, run after run)
    curated/<task>/<version>/manifest.json counts, hashes, prompt version, label ids
    curated/<task>/<version>/_READY        written last: a bucket without it is not done
    curated/<task>/<version>/_REVIEW       instead of _READY when ``curation.require_review``:
                                           the bucket waits for ``labelq review``

Dropped: labels that break the task's output contract (refusals included) and
duplicate sessions (a human label beats a teacher one; a later one beats an
earlier one). Sessions whose input was not kept cannot be trained on and are
counted as ``missing_input``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from labelq import keyspace
from labelq.contract import check
from labelq.keyspace import BucketFile
from labelq.schemas import LabelRecord, decode_as, decode_jsonl, utc_now_iso
from labelq.spec import TaskSpec
from labelq.store import ObjectStore

SOURCES = ("teacher", "human")  # later sources win on ties of time
VAL_SHARE = 0.2


@dataclass(frozen=True)
class CuratedRow:
    session_id: str
    content_hash: str
    label: str
    source: str
    label_id: str
    payload: dict[str, Any]

    def json(self) -> bytes:
        return orjson.dumps(self.__dict__)


@dataclass(frozen=True, slots=True)
class SplitCounts:
    train: int
    val: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ReviewChanges:
    """What a human review changed in a bucket before approving it."""

    edited: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Manifest:
    """``curated/<task>/<version>/manifest.json``: ``to_dict()`` is the file, ``from_dict`` reads it."""

    task: str
    version: str
    prompt_version: str
    created_at: str
    counts: SplitCounts
    sources: dict[str, int]  # rows per label source (teacher, human)
    dropped: dict[str, int]  # labels left out, by reason
    labels_seen: int
    hashes: dict[str, str]  # blake2b of each split file
    label_ids: list[str]
    review: ReviewChanges | None = field(default=None)  # present once a human reviewed the bucket

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.review is None:
            del data["review"]  # the file has the key only after a review
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        return decode_as(cls, data, "curation manifest")

    def summary(self) -> dict[str, Any]:
        """The manifest without its (long) list of label ids."""
        return {k: v for k, v in self.to_dict().items() if k != "label_ids"}


def split_of(content_hash: str, val_share: float = VAL_SHARE) -> str:
    """``train`` or ``val``, a pure function of the content hash."""
    bucket = int(hashlib.blake2b(content_hash.encode(), digest_size=4).hexdigest(), 16) / 2**32
    return "val" if bucket < val_share else "train"


def _records(store: ObjectStore, source: str, task: str) -> list[tuple[str, LabelRecord]]:
    out = []
    for obj in store.list(keyspace.labels_prefix(source, task)):
        for row in decode_jsonl(store.get_bytes(obj)):
            record = LabelRecord.decode(row)
            out.append((f"{obj}#{record.content_hash}", record))
    return out


def _inputs(store: ObjectStore, task: str) -> dict[str, dict[str, Any]]:
    payloads: dict[str, dict[str, Any]] = {}
    for source in SOURCES:
        for obj in store.list(keyspace.inputs_prefix(source, task)):
            for row in decode_jsonl(store.get_bytes(obj)):
                payloads[row["content_hash"]] = row["payload"]
    return payloads


def select_rows(spec: TaskSpec, labelled: list[tuple[str, LabelRecord]],
                payloads: dict[str, dict[str, Any]]) -> tuple[list[CuratedRow], Counter[str]]:
    """The rows worth training on, and why the others were dropped. Pure."""
    dropped: Counter[str] = Counter()
    best: dict[str, tuple[tuple[int, str], CuratedRow]] = {}
    for label_id, record in labelled:
        verdict = check(record.label, spec.contract)
        if not verdict.ok:
            dropped[f"contract_{verdict.reason}"] += 1
            continue
        payload = payloads.get(record.content_hash)
        if payload is None:
            dropped["missing_input"] += 1
            continue
        rank = (SOURCES.index(record.source) if record.source in SOURCES else 0, record.created_at)
        row = CuratedRow(record.session_id, record.content_hash, verdict.label, record.source, label_id,
                         payload)
        current = best.get(record.content_hash)
        if current is not None:
            dropped["duplicate"] += 1
            if current[0] >= rank:
                continue
        best[record.content_hash] = (rank, row)
    rows = sorted((row for _, row in best.values()), key=lambda r: r.content_hash)
    return rows, dropped


def next_version(store: ObjectStore, task: str) -> str:
    existing = {parsed[1] for k in store.list(keyspace.curated_prefix(task))
                if (parsed := keyspace.parse_bucket_file(k)) is not None}
    numbers = [int(v[1:]) for v in existing if v.startswith("v") and v[1:].isdigit()]
    return f"v{max(numbers, default=0) + 1:04d}"


def curate(store: ObjectStore, spec: TaskSpec, *, min_rows: int = 1,
           require_review: bool = False) -> Manifest | None:
    """Build the next curated bucket of ``spec``'s task; None when there is too little to train on."""
    labelled = [pair for source in SOURCES for pair in _records(store, source, spec.name)]
    rows, dropped = select_rows(spec, labelled, _inputs(store, spec.name))
    if len(rows) < min_rows:
        return None
    version = next_version(store, spec.name)
    manifest = write_bucket(store, spec, version, rows, dropped=dict(dropped),
                            labels_seen=len(labelled),
                            marker=BucketFile.REVIEW if require_review else BucketFile.READY)
    return manifest


def write_bucket(store: ObjectStore, spec: TaskSpec, version: str, rows: list[CuratedRow], *,
                 dropped: dict[str, int], labels_seen: int, marker: BucketFile,
                 review: ReviewChanges | None = None) -> Manifest:
    """Write splits and manifest, then ``marker`` (``_READY`` or ``_REVIEW``) last."""
    splits: dict[str, list[CuratedRow]] = {"train": [], "val": []}
    for row in rows:
        splits[split_of(row.content_hash)].append(row)
    hashes = {}
    for name, part in splits.items():
        data = b"".join(r.json() + b"\n" for r in part)
        store.put_bytes(keyspace.bucket_file(spec.name, version, keyspace.split_file(name)), data)
        hashes[name] = hashlib.blake2b(data, digest_size=16).hexdigest()
    manifest = Manifest(
        task=spec.name, version=version, prompt_version=spec.prompt_version, created_at=utc_now_iso(),
        counts=SplitCounts(train=len(splits["train"]), val=len(splits["val"])),
        sources=dict(Counter(r.source for r in rows)), dropped=dropped, labels_seen=labels_seen,
        hashes=hashes, label_ids=[r.label_id for r in rows], review=review,
    )
    store.put_bytes(keyspace.bucket_file(spec.name, version, BucketFile.MANIFEST),
                    orjson.dumps(manifest.to_dict(), option=orjson.OPT_INDENT_2))
    store.put_bytes(keyspace.bucket_file(spec.name, version, marker), b"")  # last: the trainer only sees whole buckets
    return manifest


def read_rows(store: ObjectStore, task: str, version: str) -> list[CuratedRow]:
    return [CuratedRow(**row) for split in (BucketFile.TRAIN, BucketFile.VAL)
            for row in decode_jsonl(store.get_bytes(keyspace.bucket_file(task, version, split)))]
