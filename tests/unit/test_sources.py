from __future__ import annotations

import gzip
import io
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.sources import iter_json_array, iter_source

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**62), 2**62) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, max_size=12), st.sampled_from([1, 2, 3, 7, 64]))
def test_array_splitter_agrees_with_a_full_parser(items: list[object], block: int) -> None:
    import producer.sources as sources

    data = orjson.dumps(items, option=orjson.OPT_INDENT_2)
    saved, sources._BLOCK_BYTES = sources._BLOCK_BYTES, block  # blocks split tokens anywhere
    try:
        records = list(iter_json_array(io.BytesIO(data), "t", max_bytes=10_000))
    finally:
        sources._BLOCK_BYTES = saved
    assert [orjson.loads(r.data) for r in records] == items
    assert all(r.structural_error is None for r in records)


def test_array_splitter_handles_escapes_across_blocks(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import producer.sources as sources

    monkeypatch.setattr(sources, "_BLOCK_BYTES", 3)
    items = [{"s": 'a\\"]},[{'}, {"s": "\\\\"}, {"k": [1, {"x": "]"}]}]
    data = orjson.dumps(items)
    records = list(iter_json_array(io.BytesIO(data), "t", max_bytes=10_000))
    assert [orjson.loads(r.data) for r in records] == items


def test_array_splitter_reports_broken_containers() -> None:
    unterminated = list(iter_json_array(io.BytesIO(b'[{"a": 1}, {"b": 2'), "t", 1000))
    assert unterminated[0].data == b'{"a": 1}'
    assert unterminated[-1].structural_error == "unterminated_array"
    trailing = list(iter_json_array(io.BytesIO(b'[{"a": 1}] garbage'), "t", 1000))
    assert trailing[-1].structural_error == "trailing_data"


def test_oversize_records_are_cut_not_held(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_bytes(b'{"a": "' + b"x" * 50_000 + b'"}\n{"b": 1}\n')
    records = list(iter_source(str(path), max_bytes=1_000))
    assert [r.oversize for r in records] == [True, False]
    assert len(records[0].data) <= 1_001
    assert records[1].line == 2 and records[1].data == b'{"b": 1}'

    array = tmp_path / "big.json"
    array.write_bytes(b'[{"a": "' + b"x" * 50_000 + b'"}, {"b": 1}]')
    records = list(iter_source(str(array), max_bytes=1_000))
    assert [r.oversize for r in records] == [True, False]
    assert len(records[0].data) <= 1_001


def test_formats_are_sniffed_from_bytes_not_names(tmp_path: Path) -> None:
    lines = b'{"id": 1}\n\n{"id": 2}\n'
    array = b'  [{"id": 1}, {"id": 2}]'
    for name, data in [("a.json", lines), ("b.txt", array), ("c.data", gzip.compress(lines)),
                       ("d.gz", gzip.compress(array))]:
        (tmp_path / name).write_bytes(data)
        got = [orjson.loads(r.data) for r in iter_source(str(tmp_path / name), max_bytes=100)]
        assert got == [{"id": 1}, {"id": 2}], name


def test_counts_bytes_for_progress(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"id": 1}\n' * 1000)
    seen: list[int] = []
    list(iter_source(str(path), max_bytes=100, on_bytes=seen.append))
    assert sum(seen) == path.stat().st_size
