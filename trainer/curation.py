"""Curation: teacher and human labels -> a versioned dataset bucket the trainer picks up.

Incremental: a bucket reads only the labels written since the previous bucket,
keeps them as its own rows, and trains on a bounded selection of its own and
earlier buckets' rows (no bucket copies another's rows)::

    curated/<task>/<version>/train.jsonl   its new rows, 80% (split by content hash: the same session
    curated/<task>/<version>/val.jsonl     always falls on the same side); human rows first, then in
                                           the order of a hash of the content hash (a prefix of the
                                           file is a uniform sample of it)
    curated/<task>/<version>/manifest.json counts, hashes, prompt version, label ids, the watermark (what
                                           it read up to), the earlier buckets' sizes, and the selection
                                           (how many rows to read from the start of each bucket's files)
    curated/<task>/<version>/_READY        written last: a bucket without it is not done
    curated/<task>/<version>/_REVIEW       instead of _READY when ``curation.require_review``:
                                           the bucket waits for ``labelq review``

What is new: teacher workers add an entry to the write log (``written/teacher/<task>/``, keys that sort
by write time) after a chunk's label and input objects; a bucket lists the log after its predecessor's
watermark (minus ``lag_s``, for entries that landed late; the ones already read are remembered) and reads
the chunks it names, at most ``max_rows`` labels (more are left for the next bucket). A bucket with no
predecessor that has a watermark (the first one, or the first after an upgrade) reads every label object
of the task instead, ``max_rows`` at a time in key order, over as many buckets as that takes.

The training set (``max_rows`` at most, plus every human row): human rows of every bucket always; half
of the rest from the newest buckets, whole; the other half a sample of the older rows, stratified by
bucket (each older bucket gives the same share of its rows). Rejected buckets are left out, and buckets
still under review until approved. The trainer reads the selection and keeps one row per session (a human
label beats a teacher one; a newer bucket's beats an older one's): its memory is bounded by the
selection, not by history.

Dropped: labels that break the task's output contract (refusals included) and
duplicate sessions among the labels read (a human label beats a teacher one; a
later one beats an earlier one). Sessions whose input was not kept cannot be
trained on and are counted as ``missing_input``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from labelq import keyspace
from labelq.contract import check
from labelq.errors import ObjectNotFound
from labelq.keyspace import BucketFile
from labelq.schemas import LabelRecord, decode_as, decode_jsonl, utc_now_iso
from labelq.spec import TaskSpec
from labelq.store import ObjectStore

SOURCES = ("teacher", "human")  # later sources win on ties of time
VAL_SHARE = 0.2
MAX_ROWS = 100_000  # the default of LABELQ_CURATION_MAX_ROWS
LAG_S = 300.0  # the default of LABELQ_CURATION_WATERMARK_LAG_S
NEWEST_SHARE = 0.5  # of the training set (beyond human rows): the newest buckets' rows, whole
READY, PENDING = "ready", "pending"


@dataclass(frozen=True)
class CuratedRow:
    session_id: str
    content_hash: str
    label: str
    source: str
    label_id: str
    payload: Any  # the session (a dict; raw JSON while curation writes it)

    def json(self) -> bytes:
        return orjson.dumps(self.__dict__)


@dataclass(frozen=True, slots=True)
class SplitCounts:
    train: int
    val: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def total(self) -> int:
        return self.train + self.val


@dataclass(frozen=True, slots=True)
class ReviewChanges:
    """What a human review changed in a bucket before approving it."""

    edited: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Watermark:
    """How far a bucket read: the next one lists the write log after ``written`` (less the lag)."""

    written: str = ""  # write stamp of the newest write-log entry read ("" before any)
    recent: list[str] = field(default_factory=list)  # entries read within the lag of ``written``: not read again
    legacy_after: str | None = None  # reading every label object, not finished: go on after this key


@dataclass(frozen=True, slots=True)
class Segment:
    """One bucket's own rows, as later buckets select from them."""

    version: str
    rows: SplitCounts  # rows in its train.jsonl and val.jsonl
    human: SplitCounts  # of which human (the first rows of each file)
    state: str = READY  # READY (approved, or no review) or PENDING (waits for review)


@dataclass(frozen=True, slots=True)
class Take:
    """Rows the training set reads from the start of one bucket's split files."""

    version: str
    train: int
    val: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """``curated/<task>/<version>/manifest.json``: ``to_dict()`` is the file, ``from_dict`` reads it."""

    task: str
    version: str
    prompt_version: str
    created_at: str
    counts: SplitCounts  # the training set: rows the selection reads (newer relabels then replace older rows)
    sources: dict[str, int]  # training-set rows per label source (teacher, human)
    dropped: dict[str, int]  # labels read by this bucket and left out, by reason
    labels_seen: int  # labels read by this bucket
    hashes: dict[str, str]  # blake2b of each of this bucket's split files
    label_ids: list[str]  # this bucket's rows
    review: ReviewChanges | None = field(default=None)  # present once a human reviewed the bucket
    new: SplitCounts | None = None  # this bucket's own rows (None: written before incremental curation)
    watermark: Watermark | None = None
    max_rows: int = MAX_ROWS
    segments: list[Segment] = field(default_factory=list)  # earlier buckets not rejected, then this one
    selection: list[Take] = field(default_factory=list)  # empty: the bucket's own files are the training set

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.review is None:
            del data["review"]  # the file has the key only after a review
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        return decode_as(cls, data, "curation manifest")

    def summary(self) -> dict[str, Any]:
        """The manifest without its long lists (label ids, recent write-log entries, earlier buckets)."""
        data = {k: v for k, v in self.to_dict().items() if k not in ("label_ids", "segments", "selection")}
        if self.watermark is not None:
            data["watermark"] = {k: v for k, v in data["watermark"].items() if k != "recent"}
        data["buckets_selected"] = len(self.selection)
        return data


def split_of(content_hash: str, val_share: float = VAL_SHARE) -> str:
    """``train`` or ``val``, a pure function of the content hash."""
    bucket = int(hashlib.blake2b(content_hash.encode(), digest_size=4).hexdigest(), 16) / 2**32
    return "val" if bucket < val_share else "train"


def sample_key(content_hash: str) -> bytes:
    """Where a row falls in its bucket's files after the human rows: a prefix is a uniform sample."""
    return hashlib.blake2b(content_hash.encode(), digest_size=8, person=b"labelq-sample").digest()


# --- reading what is new ----------------------------------------------------------------------------


@dataclass
class Window:
    """The labels one bucket read, the sessions they label, and how far it got."""

    labelled: list[tuple[str, LabelRecord]]
    payloads: dict[str, Any]  # content hash -> the session, as raw JSON
    watermark: Watermark


def _read_object(store: ObjectStore, label_key: str, inputs_key: str, window: Window) -> int:
    """Read one chunk's labels and inputs into ``window``; the number of labels."""
    try:
        data = store.get_bytes(label_key)
    except ObjectNotFound:  # named by the log but gone (a retention rule): nothing to train on
        return 0
    try:
        for line in store.get_bytes(inputs_key).splitlines():
            if line.strip():
                row = orjson.loads(line)
                window.payloads[row["content_hash"]] = orjson.Fragment(orjson.dumps(row["payload"]))
    except ObjectNotFound:
        pass  # a human label's session comes from the teacher's inputs, or is missing
    rows = decode_jsonl(data)
    for row in rows:
        record = LabelRecord.decode(row)
        window.labelled.append((f"{label_key}#{record.content_hash}", record))
    return len(rows)


def _log_head(store: ObjectStore, task: str, lag_s: float) -> Watermark:
    """The write log as it is now: where a bucket that reads every label object leaves it."""
    newest, entries = "", []
    for entry in store.list(keyspace.written_prefix("teacher", task)):
        parsed = keyspace.parse_written(entry)
        if parsed is not None:
            newest = max(newest, parsed[0])
            entries.append((parsed[0], entry))
            if len(entries) > 10_000:  # keep only what can still be within the lag of the newest
                cut = keyspace.shift_stamp(newest, -lag_s)
                entries = [e for e in entries if e[0] >= cut]
    cut = keyspace.shift_stamp(newest, -lag_s) if newest else ""
    return Watermark(written=newest, recent=sorted(e for s, e in entries if s >= cut), legacy_after="")


def read_new(store: ObjectStore, task: str, previous: Watermark | None, *, limit: int = MAX_ROWS,
             lag_s: float = LAG_S) -> Window:
    """The labels written after ``previous`` (None: every label object, then the write log from where it
    stood when that began), at most about ``limit`` (whole objects), with the sessions they label and the
    watermark to leave for the next bucket."""
    mark = previous if previous is not None else _log_head(store, task, lag_s)
    window = Window([], {}, mark)
    seen = 0
    if mark.legacy_after is not None:  # every label object, in key order, ``limit`` at a time
        last: str | None = None
        for prefix in sorted(keyspace.labels_prefix(source, task) for source in SOURCES):
            for key in store.list(prefix, start_after=mark.legacy_after or None):
                if seen >= limit:
                    window.watermark = Watermark(mark.written, mark.recent, legacy_after=last)
                    return window
                seen += _read_object(store, key, keyspace.inputs_of_labels(key), window)
                last = key
        mark = Watermark(mark.written, mark.recent, legacy_after=None)  # done: on to the write log
    start = keyspace.written_prefix("teacher", task, keyspace.shift_stamp(mark.written, -lag_s)) \
        if mark.written else None
    done = set(mark.recent)
    newest, read = mark.written, []
    for entry in store.list(keyspace.written_prefix("teacher", task), start_after=start):
        parsed = keyspace.parse_written(entry)
        if parsed is None or entry in done:
            continue
        if seen >= limit:
            break
        stamp, label_key, inputs_key = parsed
        seen += _read_object(store, label_key, inputs_key, window)
        newest = max(newest, stamp)
        read.append(entry)
    cut = keyspace.shift_stamp(newest, -lag_s) if newest else ""
    recent = sorted(e for e in (*done, *read) if (p := keyspace.parse_written(e)) is not None and p[0] >= cut)
    window.watermark = Watermark(written=newest, recent=recent)
    return window


def select_rows(spec: TaskSpec, labelled: Iterable[tuple[str, LabelRecord]],
                payloads: dict[str, Any]) -> tuple[list[CuratedRow], Counter[str]]:
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


# --- the training set -------------------------------------------------------------------------------


def plan_selection(segments: list[Segment], max_rows: int, newest_share: float = NEWEST_SHARE) -> list[Take]:
    """How many rows of each bucket (oldest first) the training set reads. Pure.

    Every human row; of the room left under ``max_rows``, ``newest_share`` for the newest buckets' other
    rows (whole buckets, newest first; the bucket at the edge in part), the rest for the other rows of the
    older buckets at one rate for all (a sample stratified by bucket). Room the newest do not fill goes to
    the older ones. Never more than ``max_rows`` rows unless human rows alone are more.
    """
    humans = sum(s.human.total for s in segments)
    others = [s.rows.total - s.human.total for s in segments]
    room = max(max_rows - humans, 0)
    rates = [0.0] * len(segments)
    newest_room = left = int(room * newest_share)
    for i in reversed(range(len(segments))):
        if left <= 0:
            break
        if others[i] <= left:
            rates[i], left = 1.0, left - others[i]
        else:
            rates[i], left = left / others[i], 0
    rest = sum(n * (1 - rate) for n, rate in zip(others, rates, strict=True))
    older_room = room - (newest_room - left)
    if rest > 0 and older_room > 0:
        share = older_room / rest
        rates = [1.0 if share >= 1 else rate + (1 - rate) * share for rate in rates]

    # Whole rows: floors, then the rows the floors lost to the largest remainders (the newest on ties).
    exact = [n * rate for n, rate in zip(others, rates, strict=True)]
    quota = [n if rate >= 1 else int(x) for n, rate, x in zip(others, rates, exact, strict=True)]
    short = min(round(sum(exact)), sum(others)) - sum(quota)
    for i in sorted(range(len(segments)), key=lambda i: (quota[i] - exact[i], -i))[:max(short, 0)]:
        quota[i] += 1 if quota[i] < others[i] else 0
    takes = []
    for s, n, q in zip(segments, others, quota, strict=True):
        train_others, val_others = s.rows.train - s.human.train, s.rows.val - s.human.val
        train = min(train_others, round(q * train_others / n)) if n else 0
        val = min(val_others, q - train)
        takes.append(Take(s.version, s.human.train + q - val, s.human.val + val))
    return takes


def _first_lines(store: ObjectStore, key: str, n: int) -> Iterator[bytes]:
    """The first ``n`` lines of an object, read as a stream (the rest is never downloaded whole)."""
    if n <= 0:
        return
    pending = b""
    blocks = store.open_read(key)
    try:
        for block in blocks:
            lines = (pending + block).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if line.strip():
                    yield line
                    n -= 1
                    if n == 0:
                        return
        if pending.strip():
            yield pending
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()


def read_training_set(store: ObjectStore, task: str, version: str) -> tuple[list[dict[str, Any]],
                                                                         list[dict[str, Any]]]:
    """The rows a bucket trains on (train, val), one per session, sorted by content hash.

    Reads the manifest's selection: the first rows of each selected bucket's files. Of two rows of one
    session a human one wins, then the newer bucket's. A bucket without a selection (one written before
    incremental curation, or by hand) is its own files, whole.
    """
    try:
        manifest: Manifest | None = Manifest.from_dict(
            store.get_bytes(keyspace.bucket_file(task, version, BucketFile.MANIFEST)))
    except ObjectNotFound:
        manifest = None
    if manifest is None or not manifest.selection:
        return tuple(decode_jsonl(store.get_bytes(keyspace.bucket_file(task, version, keyspace.split_file(s))))
                     for s in ("train", "val"))  # type: ignore[return-value]
    out: dict[str, dict[str, tuple[tuple[bool, int], dict[str, Any]]]] = {"train": {}, "val": {}}
    for order, take in enumerate(manifest.selection):  # oldest first
        for split, n in (("train", take.train), ("val", take.val)):
            best = out[split]
            for line in _first_lines(store, keyspace.bucket_file(task, take.version, keyspace.split_file(split)), n):
                row = orjson.loads(line)
                rank = (row["source"] == "human", order)
                current = best.get(row["content_hash"])
                if current is None or rank >= current[0]:
                    best[row["content_hash"]] = (rank, row)
    train, val = ([row for _, (_, row) in sorted(out[s].items())] for s in ("train", "val"))
    return train, val


# --- writing a bucket -------------------------------------------------------------------------------


def bucket_files(store: ObjectStore, task: str) -> dict[str, set[str]]:
    """Each bucket version of ``task`` and the files it has."""
    found: dict[str, set[str]] = {}
    for k in store.list(keyspace.curated_prefix(task)):
        parsed = keyspace.parse_bucket_file(k)
        if parsed is not None:
            found.setdefault(parsed[1], set()).add(parsed[2])
    return found


def next_version(store: ObjectStore, task: str, buckets: dict[str, set[str]] | None = None) -> str:
    existing = bucket_files(store, task) if buckets is None else buckets
    numbers = [int(v[1:]) for v in existing if v.startswith("v") and v[1:].isdigit()]
    return f"v{max(numbers, default=0) + 1:04d}"


_MARKERS = {BucketFile.READY, BucketFile.REVIEW, BucketFile.REJECTED, BucketFile.TRAINED}


def latest_manifest(store: ObjectStore, task: str, buckets: dict[str, set[str]]) -> Manifest | None:
    """The newest complete bucket's manifest (one with a marker: a crashed curation left none)."""
    for version in sorted(buckets, reverse=True):
        if BucketFile.MANIFEST in buckets[version] and buckets[version] & _MARKERS:
            return Manifest.from_dict(store.get_bytes(keyspace.bucket_file(task, version, BucketFile.MANIFEST)))
    return None


def _own_segment(manifest: Manifest) -> Segment | None:
    return next((s for s in manifest.segments if s.version == manifest.version), None)


def earlier_segments(store: ObjectStore, task: str, previous: Manifest,
                     buckets: dict[str, set[str]]) -> list[Segment]:
    """``previous``'s buckets as they are now: rejected ones gone, approved ones (re-read: a review may
    have changed their rows) ready."""
    out = []
    for seg in previous.segments:
        files = buckets.get(seg.version, set())
        if BucketFile.REJECTED in files:
            continue
        if seg.state == PENDING and files & {BucketFile.READY, BucketFile.TRAINED}:
            if seg.version != previous.version:
                approved = Manifest.from_dict(
                    store.get_bytes(keyspace.bucket_file(task, seg.version, BucketFile.MANIFEST)))
                seg = _own_segment(approved) or seg
            seg = Segment(seg.version, seg.rows, seg.human, READY)
        out.append(seg)
    return out


def write_bucket(store: ObjectStore, spec: TaskSpec, version: str, rows: list[CuratedRow], *,
                 dropped: dict[str, int], labels_seen: int, marker: BucketFile,
                 watermark: Watermark | None, earlier: list[Segment], max_rows: int = MAX_ROWS,
                 review: ReviewChanges | None = None) -> Manifest:
    """Write this bucket's rows (human rows first, then by :func:`sample_key`), its manifest (with the
    training set's selection over ``earlier`` buckets and this one), then ``marker`` last."""
    splits: dict[str, list[CuratedRow]] = {"train": [], "val": []}
    for row in rows:
        splits[split_of(row.content_hash)].append(row)
    hashes = {}
    for name, part in splits.items():
        part.sort(key=lambda r: (r.source != "human", sample_key(r.content_hash)))
        data = b"".join(r.json() + b"\n" for r in part)
        store.put_bytes(keyspace.bucket_file(spec.name, version, keyspace.split_file(name)), data)
        hashes[name] = hashlib.blake2b(data, digest_size=16).hexdigest()
    new = SplitCounts(train=len(splits["train"]), val=len(splits["val"]))
    human = SplitCounts(*(sum(1 for r in splits[s] if r.source == "human") for s in ("train", "val")))
    segments: list[Segment] = []
    selection: list[Take] = []
    if watermark is not None:
        own = Segment(version, new, human, PENDING if marker == BucketFile.REVIEW else READY)
        segments = [*earlier, own]
        chosen = [s for s in segments if s.state == READY or s is own]
        selection = [t for t in plan_selection(chosen, max_rows) if t.train or t.val]
        by_version = {s.version: s for s in chosen}
        counts = SplitCounts(sum(t.train for t in selection), sum(t.val for t in selection))
        humans = sum(by_version[t.version].human.total for t in selection)
        sources = {k: v for k, v in (("teacher", counts.total - humans), ("human", humans)) if v}
    else:  # a bucket curated before incremental curation, rewritten by a review: its files are its set
        counts = new
        sources = dict(Counter(r.source for r in rows))
    manifest = Manifest(
        task=spec.name, version=version, prompt_version=spec.prompt_version, created_at=utc_now_iso(),
        counts=counts, sources=sources, dropped=dropped, labels_seen=labels_seen, hashes=hashes,
        label_ids=[r.label_id for r in rows], review=review, new=new, watermark=watermark, max_rows=max_rows,
        segments=segments, selection=selection,
    )
    store.put_bytes(keyspace.bucket_file(spec.name, version, BucketFile.MANIFEST),
                    orjson.dumps(manifest.to_dict(), option=orjson.OPT_INDENT_2))
    store.put_bytes(keyspace.bucket_file(spec.name, version, marker), b"")  # last: the trainer only sees whole buckets
    return manifest


def curate(store: ObjectStore, spec: TaskSpec, *, min_rows: int = 1, require_review: bool = False,
           max_rows: int = MAX_ROWS, lag_s: float = LAG_S) -> Manifest | None:
    """Build the next curated bucket of ``spec``'s task from the labels written since the last one; None
    when they give fewer than ``min_rows`` rows (nothing is written; the next call reads them again)."""
    buckets = bucket_files(store, spec.name)
    previous = latest_manifest(store, spec.name, buckets)
    incremental = previous is not None and previous.watermark is not None
    window = read_new(store, spec.name, previous.watermark if previous is not None else None,
                      limit=max_rows, lag_s=lag_s)
    rows, dropped = select_rows(spec, window.labelled, window.payloads)
    if len(rows) < min_rows:
        return None
    earlier = earlier_segments(store, spec.name, previous, buckets) if incremental and previous else []
    return write_bucket(store, spec, next_version(store, spec.name, buckets), rows, dropped=dict(dropped),
                        labels_seen=len(window.labelled), watermark=window.watermark, earlier=earlier,
                        max_rows=max_rows, marker=BucketFile.REVIEW if require_review else BucketFile.READY)


def read_rows(store: ObjectStore, task: str, version: str) -> list[CuratedRow]:
    """A bucket's own rows (what its review shows and edits)."""
    return [CuratedRow(**row) for split in (BucketFile.TRAIN, BucketFile.VAL)
            for row in decode_jsonl(store.get_bytes(keyspace.bucket_file(task, version, split)))]
