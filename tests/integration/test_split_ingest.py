"""Large local files split by byte range across processes count exactly like one stream."""

from __future__ import annotations

import itertools
import multiprocessing
from pathlib import Path

import pytest
import redis

from labelq.settings import Settings
from labelq.synth import generate
from producer import run, split
from producer.run import run_ingest
from producer.split import plan_ranges
from tests.support.helpers import dead_letters, queued_session_ids, write_jsonl

pytestmark = pytest.mark.integration


def test_plan_cuts_at_line_starts_with_true_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    lines = [f'{{"session_id": "s{i}", "pad": "{"x" * (i % 50)}"}}'.encode() for i in range(997)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    ranges = plan_ranges(path, 4, min_bytes=1)
    assert ranges is not None and len(ranges) == 4
    data = path.read_bytes()
    assert ranges[0].start == 0 and ranges[-1].end == len(data)
    for prev, nxt in itertools.pairwise(ranges):
        assert prev.end == nxt.start and data[nxt.start - 1:nxt.start] == b"\n"
        assert nxt.first_line == data[:nxt.start].count(b"\n") + 1
    records = [r for rng in ranges for r in split.iter_range(rng, 10_000)]
    assert [r.line for r in records] == list(range(1, 998))
    assert [r.data for r in records] == lines
    assert plan_ranges(path, 1, min_bytes=1) is None
    assert plan_ranges(path, 4, min_bytes=10**9) is None
    (tmp_path / "a.json").write_bytes(b"[" + b",".join(lines) + b"]")
    assert plan_ranges(tmp_path / "a.json", 4, min_bytes=1) is None


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_split_ingest_matches_streaming(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    monkeypatch.setattr(run, "start_context", lambda: multiprocessing.get_context(method))
    sessions = list(generate(900, seed=12))
    bad = [b"{oops", b'{"no_id": 1}']
    path = write_jsonl(tmp_path / "big.jsonl", sessions[:500] + sessions[:100] + sessions[500:], bad)
    split_settings = settings.model_copy(update={"ingest_processes": 3, "ingest_split_min_bytes": 1})
    seen: list[int] = []
    summary = run_ingest(split_settings, [str(path)], client=redis_client, on_bytes=seen.append)
    assert (summary.read, summary.enqueued, summary.duplicates) == (1002, 900, 100)
    assert dict(summary.rejected) == {"invalid_json": 1, "missing_id": 1}
    assert sum(seen) == path.stat().st_size
    queued = queued_session_ids(settings, redis_client)
    assert sorted(queued) == sorted(s["session_id"] for s in sessions)
    assert sorted(d["line"] for d in dead_letters(settings)) == [1001, 1002]
