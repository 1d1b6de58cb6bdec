"""Streaming export (labelq/export.py) on a local store: the external merge gives the in-memory answer."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from labelq import export, keyspace
from labelq.schemas import LabelRecord, parse_utc
from labelq.store import LocalStore


def _record(task: str, session: str, source: str, at: str, label: str) -> LabelRecord:
    return LabelRecord(session_id=session, content_hash=f"h-{session}", task=task, label=label, source=source,  # type: ignore[arg-type]
                       model="m", prompt_version="p", words=len(label.split()), chunk_id="c", created_at=at)


def _oracle(objects: list[tuple[str, list[LabelRecord]]]) -> list[LabelRecord]:
    """The export as it was written before it streamed: everything in one dict."""
    best: dict[tuple[str, str], tuple[tuple[object, int], LabelRecord]] = {}
    for source in export.SOURCES:
        for key, records in sorted(objects):
            if key.split("/")[1] != source:
                continue
            for r in records:
                order = (parse_utc(r.created_at), export.SOURCES.index(source))
                current = best.get((r.task, r.session_id))
                if current is None or order >= current[0]:  # type: ignore[operator]
                    best[(r.task, r.session_id)] = (order, r)
    return [r for _, r in sorted(best.values(), key=lambda item: (item[1].task, item[1].session_id))]


@pytest.fixture
def store(tmp_path: Path) -> tuple[LocalStore, list[tuple[str, list[LabelRecord]]]]:
    """Three tasks, every source, relabels, ties of time (a later source wins, then the one read last),
    one time written with an offset that is earlier in UTC."""
    store = LocalStore(tmp_path / "store")
    objects: list[tuple[str, list[LabelRecord]]] = []
    for n in range(12):
        source = export.SOURCES[n % 3]
        task = ("a", "b", "c d")[n % 3 if n < 9 else 0]
        records = [_record(task, f"s{(i * 7 + n) % 23:02d}", source,
                           f"2026-03-{1 + (i + n) % 4:02d}T00:00:00+00:00", f"Label {n} {i}") for i in range(17)]
        records.append(_record(task, "s00", source, "2026-03-09T01:00:00+02:00", f"Offset {n}"))
        key = keyspace.labels(source, task, f"chunk-{n:02d}")
        store.put_bytes(key, b"".join(orjson.dumps(r.model_dump(mode="json")) + b"\n" for r in records))
        objects.append((key, records))
    return store, objects


def test_the_external_merge_gives_the_in_memory_answer(
        store: tuple[LocalStore, list[tuple[str, list[LabelRecord]]]], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    local, objects = store
    expected = _oracle(objects)
    assert len(expected) > 23  # sessions repeat across tasks
    in_memory = list(export.latest_rows(local))
    assert [LabelRecord.decode(r) for r in in_memory] == expected
    monkeypatch.setattr(export, "FAN_IN", 3)  # 7-row runs: dozens of them, merged in several passes
    spills: list[Path] = []
    spill = export._spill
    monkeypatch.setattr(export, "_spill", lambda *args: spills.append(spill(*args)) or spills[-1])
    spilled = list(export.latest_rows(local, run_rows=7, tmp_dir=tmp_path))
    assert spilled == in_memory and len(spills) > 2 * 3
    assert list(tmp_path.glob("labelq-export-*")) == []  # the runs are gone
    filtered = export.latest_labels(local, tasks=["a"], sources=["teacher", "human"], since="2026-03-02",
                                    until="2026-03-04")
    assert filtered and all(r.task == "a" and r.source != "student" and "2026-03-02" <= r.created_at < "2026-03-04"
                            for r in filtered)
    assert [orjson.dumps(r.model_dump(mode="json")) for r in filtered] == list(export.latest_rows(
        local, tasks=["a"], sources=["teacher", "human"], since="2026-03-02", until="2026-03-04", run_rows=5))


def test_export_streams_to_jsonl_and_parquet(store: tuple[LocalStore, list[tuple[str, list[LabelRecord]]]],
                                              tmp_path: Path) -> None:
    local, objects = store
    expected = _oracle(objects)
    for name in ("out.jsonl", "out.parquet"):
        assert export.export_latest(local, tmp_path / name) == (name.split(".")[1], len(expected))
    assert [LabelRecord.decode(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()] == expected
    import pyarrow.parquet as pq

    assert [LabelRecord.decode(r) for r in pq.read_table(tmp_path / "out.parquet").to_pylist()] == expected
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
