"""``labelq export``: the latest label per session to one JSONL or Parquet file, in bounded memory.

Reads every label record under ``labels/<source>/<task>/`` (filtered by task,
source and creation date) and keeps, per (task, session), the record created
last; on equal times a human label beats a teacher one, which beats a student
one (and of two equal records, the one read last).

Memory does not grow with the number of labels (an external merge sort):

1. records stream from a lazy store listing into a buffer that keeps the
   latest record per (task, session) seen so far; at ``run_rows`` entries the
   buffer is sorted and spilled to a temp file (a sorted *run*);
2. the runs are merged (``heapq.merge``, at most ``FAN_IN`` open at once;
   more are first merged into longer runs), and of each (task, session) the
   last line wins. Output comes out sorted by (task, session id).

Peak memory is one buffer (``run_rows`` records) plus a read buffer per open
run; the temp files take about the export's size on disk (``tmp_dir``, default
the system temp folder).
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from labelq import keyspace
from labelq.errors import ConfigError
from labelq.schemas import LabelRecord, decode_jsonl, parse_utc
from labelq.store import ObjectStore

SOURCES = ("student", "teacher", "human")  # later wins on ties
RUN_ROWS = 20_000  # records buffered before a sorted run is spilled to disk
FAN_IN = 64  # runs merged at once
PARQUET_BATCH_ROWS = 10_000

# The order of a record within its (task, session): created_at (UTC, fixed width), source rank, read order.
_Key = tuple[str, str, str, int, int]


def _when(value: str) -> datetime:
    try:
        return parse_utc(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _scan(store: ObjectStore, tasks: Iterable[str] | None, sources: Iterable[str] | None,
          since: str | None, until: str | None) -> Iterator[tuple[_Key, bytes]]:
    """Every record that passes the filters, as (its sort key, its JSON), one object at a time."""
    wanted_tasks = set(tasks) if tasks else None
    wanted_sources = [s for s in SOURCES if not sources or s in set(sources)]
    unknown = set(sources or ()) - set(SOURCES)
    if unknown:
        raise ConfigError(f"unknown source(s) {', '.join(sorted(unknown))}: choose from {', '.join(SOURCES)}")
    low, high = (_when(since) if since else None), (_when(until) if until else None)
    seq = 0
    for rank, source in enumerate(SOURCES):
        if source not in wanted_sources:
            continue
        for key in store.list(keyspace.labels_prefix(source)):
            if wanted_tasks is not None and keyspace.task_of_labels(key) not in wanted_tasks:
                continue
            for row in decode_jsonl(store.get_bytes(key)):
                record = LabelRecord.decode(row)
                created = _when(record.created_at)
                if (low and created < low) or (high and created >= high):
                    continue
                when = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
                seq += 1
                yield (record.task, record.session_id, when, rank, seq), orjson.dumps(record.model_dump(mode="json"))


def _spill(entries: Iterable[tuple[_Key, bytes]], folder: Path, n: int) -> Path:
    path = folder / f"run-{n:06d}"
    with path.open("wb") as out:
        for key, data in entries:
            out.write(orjson.dumps(key) + b"\t" + data + b"\n")
    return path


def _read_run(fh: IO[bytes]) -> Iterator[tuple[_Key, bytes]]:
    for line in fh:
        head, _, data = line.rstrip(b"\n").partition(b"\t")  # JSON never holds a raw tab
        key = orjson.loads(head)
        yield (key[0], key[1], key[2], key[3], key[4]), data


def _merge(runs: list[Path]) -> Iterator[tuple[_Key, bytes]]:
    handles = [run.open("rb", buffering=1 << 16) for run in runs]
    try:
        yield from heapq.merge(*(_read_run(fh) for fh in handles), key=lambda entry: entry[0])
    finally:
        for fh in handles:
            fh.close()


def _latest(entries: Iterable[tuple[_Key, bytes]]) -> Iterator[tuple[_Key, bytes]]:
    """Of sorted entries, the last of each (task, session)."""
    last: tuple[_Key, bytes] | None = None
    for entry in entries:
        if last is not None and entry[0][:2] != last[0][:2]:
            yield last
        last = entry
    if last is not None:
        yield last


def latest_rows(store: ObjectStore, *, tasks: Iterable[str] | None = None, sources: Iterable[str] | None = None,
                since: str | None = None, until: str | None = None, run_rows: int = RUN_ROWS,
                tmp_dir: Path | None = None) -> Iterator[bytes]:
    """The latest record per (task, session) as JSON, sorted by (task, session id), in bounded memory."""
    buffer: dict[tuple[str, str], tuple[_Key, bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="labelq-export-", dir=tmp_dir) as tmp:
        folder = Path(tmp)
        runs: list[Path] = []
        for key, data in _scan(store, tasks, sources, since, until):
            current = buffer.get(key[:2])
            if current is None or key >= current[0]:
                buffer[key[:2]] = (key, data)
                if len(buffer) >= run_rows:
                    runs.append(_spill(sorted(buffer.values(), key=lambda e: e[0]), folder, len(runs)))
                    buffer.clear()
        if not runs:  # it all fitted in memory
            yield from (data for _, data in sorted(buffer.values(), key=lambda e: e[0]))
            return
        if buffer:
            runs.append(_spill(sorted(buffer.values(), key=lambda e: e[0]), folder, len(runs)))
            buffer.clear()
        made = len(runs)
        while len(runs) > FAN_IN:  # merge the oldest runs into longer ones until one merge can take them all
            batch, runs = runs[:FAN_IN], runs[FAN_IN:]
            runs.append(_spill(_latest(_merge(batch)), folder, made))
            made += 1
            for run in batch:
                run.unlink()
        yield from (data for _, data in _latest(_merge(runs)))


def latest_labels(store: ObjectStore, *, tasks: Iterable[str] | None = None, sources: Iterable[str] | None = None,
                  since: str | None = None, until: str | None = None) -> list[LabelRecord]:
    """:func:`latest_rows` as records, in a list (for small stores: the demo's report, tests)."""
    return [LabelRecord.decode(data) for data in latest_rows(store, tasks=tasks, sources=sources, since=since,
                                                             until=until)]


def _arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("v", pa.int64()), ("session_id", pa.string()), ("content_hash", pa.string()), ("task", pa.string()),
        ("label", pa.string()), ("source", pa.string()), ("model", pa.string()), ("adapter_version", pa.int64()),
        ("prompt_version", pa.string()), ("confidence", pa.float64()), ("words", pa.int64()),
        ("input_tokens", pa.int64()), ("output_tokens", pa.int64()), ("cost_usd", pa.float64()),
        ("latency_ms", pa.float64()), ("chunk_id", pa.string()), ("created_at", pa.string()),
        ("flags", pa.list_(pa.string())),
    ])


def write_rows(rows: Iterable[bytes], out: Path, fmt: str | None = None) -> tuple[str, int]:
    """Stream JSON label records to ``out`` atomically; the format comes from ``fmt`` or the file name
    (.parquet, else JSONL). Returns the format and the number of records."""
    fmt = fmt or ("parquet" if out.suffix == ".parquet" else "jsonl")
    if fmt not in ("jsonl", "parquet"):
        raise ConfigError(f"unknown export format {fmt!r}: jsonl or parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    count = 0
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = _arrow_schema()
            with pq.ParquetWriter(tmp, schema) as writer:
                batch: list[dict[str, Any]] = []
                for data in rows:
                    batch.append(orjson.loads(data))
                    if len(batch) == PARQUET_BATCH_ROWS:
                        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                        count += len(batch)
                        batch = []
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
        else:
            with tmp.open("wb", buffering=1 << 20) as fh:
                for data in rows:
                    fh.write(data + b"\n")
                    count += 1
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return fmt, count


def write_export(records: Iterable[LabelRecord], out: Path, fmt: str | None = None) -> str:
    """Write records atomically; the format comes from ``fmt`` or the file name (.parquet, else JSONL)."""
    written, _ = write_rows((orjson.dumps(r.model_dump(mode="json")) for r in records), out, fmt)
    return written


def export_latest(store: ObjectStore, out: Path, fmt: str | None = None, *, tasks: Iterable[str] | None = None,
                  sources: Iterable[str] | None = None, since: str | None = None, until: str | None = None,
                  tmp_dir: Path | None = None) -> tuple[str, int]:
    """``labelq export``: the latest label per session, streamed from the store to ``out``."""
    return write_rows(latest_rows(store, tasks=tasks, sources=sources, since=since, until=until, tmp_dir=tmp_dir),
                      out, fmt)
