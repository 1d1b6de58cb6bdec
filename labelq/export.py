"""``labelq export``: the latest label per session to one JSONL or Parquet file.

Reads every label record under ``labels/<source>/<task>/`` (filtered by task,
source and creation date) and keeps, per (task, session), the record created
last; on equal times a human label beats a teacher one, which beats a student one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from labelq import keyspace
from labelq.errors import ConfigError
from labelq.schemas import LabelRecord, decode_jsonl, parse_utc
from labelq.store import ObjectStore

SOURCES = ("student", "teacher", "human")  # later wins on ties


def _when(value: str) -> datetime:
    try:
        return parse_utc(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def latest_labels(store: ObjectStore, *, tasks: Iterable[str] | None = None, sources: Iterable[str] | None = None,
                  since: str | None = None, until: str | None = None) -> list[LabelRecord]:
    wanted_tasks = set(tasks) if tasks else None
    wanted_sources = [s for s in SOURCES if not sources or s in set(sources)]
    unknown = set(sources or ()) - set(SOURCES)
    if unknown:
        raise ConfigError(f"unknown source(s) {', '.join(sorted(unknown))}: choose from {', '.join(SOURCES)}")
    low, high = (_when(since) if since else None), (_when(until) if until else None)
    best: dict[tuple[str, str], tuple[tuple[datetime, int], LabelRecord]] = {}
    for source in wanted_sources:
        for key in store.list(keyspace.labels_prefix(source)):
            task = keyspace.task_of_labels(key)
            if wanted_tasks is not None and task not in wanted_tasks:
                continue
            for row in decode_jsonl(store.get_bytes(key)):
                record = LabelRecord.decode(row)
                created = _when(record.created_at)
                if (low and created < low) or (high and created >= high):
                    continue
                order = (created, SOURCES.index(source))
                current = best.get((record.task, record.session_id))
                if current is None or order >= current[0]:
                    best[(record.task, record.session_id)] = (order, record)
    return [r for _, r in sorted(best.values(), key=lambda item: (item[1].task, item[1].session_id))]


def write_export(records: list[LabelRecord], out: Path, fmt: str | None = None) -> str:
    """Write atomically; the format comes from ``fmt`` or the file name (.parquet, else JSONL)."""
    fmt = fmt or ("parquet" if out.suffix == ".parquet" else "jsonl")
    rows: list[dict[str, Any]] = [r.model_dump(mode="json") for r in records]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    elif fmt == "jsonl":
        tmp.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    else:
        raise ConfigError(f"unknown export format {fmt!r}: jsonl or parquet")
    tmp.replace(out)
    return fmt
