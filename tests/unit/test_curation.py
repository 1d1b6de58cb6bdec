from __future__ import annotations

from pathlib import Path

import orjson

from labelq import keyspace
from labelq.keyspace import BucketFile
from labelq.schemas import LabelRecord
from labelq.spec import load_spec
from labelq.store import LocalStore
from tests.support.labels import TASK, put_teacher_labels
from tests.support.labels import label_record as rec
from trainer.curation import (
    Manifest,
    Segment,
    SplitCounts,
    Take,
    curate,
    plan_selection,
    read_training_set,
    select_rows,
    split_of,
)

SPEC = load_spec("session-label")


def test_filters_dedupes_and_prefers_humans() -> None:
    payloads = {h: {"session_id": f"s-{h}"} for h in ("a", "b", "c", "d")}
    labelled = [
        ("1", rec("a", "Searches shoes and pays by card")),
        ("2", rec("a", "Searches shoes and pays by PayPal", source="human")),
        ("3", rec("a", "Searches shoes", at="2026-02-01T00:00:00")),
        ("4", rec("b", "I'm sorry, I cannot label this session")),
        ("5", rec("c", "The user browsed the site for a very long time before leaving")),
        ("6", rec("e", "Has no stored input")),
        ("7", rec("d", "Buys a gift card")),
    ]
    rows, dropped = select_rows(SPEC, labelled, payloads)
    by_hash = {r.content_hash: r for r in rows}
    assert by_hash["a"].label == "Searches shoes and pays by PayPal" and by_hash["a"].source == "human"
    assert set(by_hash) == {"a", "d"}
    assert dropped == {"duplicate": 2, "contract_refusal": 1, "contract_too_many_words": 1, "missing_input": 1}


def test_split_is_deterministic_and_about_80_20() -> None:
    splits = [split_of(f"{i:032x}") for i in range(5000)]
    assert splits == [split_of(f"{i:032x}") for i in range(5000)]
    assert 0.17 < splits.count("val") / 5000 < 0.23


def test_bucket_written_whole_with_ready_last(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put_teacher_labels(store, [rec(f"{i:032x}", "Buys a gift card") for i in range(50)])
    writes: list[str] = []
    real_put = store.put_bytes
    store.put_bytes = lambda k, d: (writes.append(k), real_put(k, d))[1]  # type: ignore[method-assign]
    manifest = curate(store, SPEC)
    assert manifest is not None and manifest.version == "v0001"
    assert manifest.counts.train + manifest.counts.val == 50 and manifest.new == manifest.counts
    assert writes[-1] == keyspace.bucket_file("session-label", "v0001", BucketFile.READY)
    assert manifest.prompt_version == SPEC.prompt_version and len(manifest.label_ids) == 50
    # The file holds exactly the manifest's fields, and reads back equal (no "review" key before a review).
    stored = orjson.loads(store.get_bytes(keyspace.bucket_file("session-label", "v0001", BucketFile.MANIFEST)))
    assert list(stored) == ["task", "version", "prompt_version", "created_at", "counts", "sources", "dropped",
                            "labels_seen", "hashes", "label_ids", "new", "watermark", "max_rows", "segments",
                            "selection"]
    assert stored["counts"] == {"train": manifest.counts.train, "val": manifest.counts.val}
    assert Manifest.from_dict(stored) == manifest
    assert curate(store, SPEC) is None  # nothing new since v0001
    put_teacher_labels(store, [rec(f"{i:032x}", "Buys a gift card") for i in range(50, 60)], "c2")
    second = curate(store, SPEC)
    assert second is not None and second.version == "v0002" and second.labels_seen == 10
    assert curate(LocalStore(tmp_path / "empty"), SPEC) is None


def _reads(store: LocalStore) -> list[str]:
    """Every key ``store.get_bytes`` is asked for from now on."""
    keys: list[str] = []
    real_get = store.get_bytes
    store.get_bytes = lambda k: (keys.append(k), real_get(k))[1]  # type: ignore[method-assign]
    return keys


def _chunk(n: int, start: int, label: str = "Buys a gift card") -> list[LabelRecord]:
    return [rec(f"{i:032x}", label) for i in range(start, start + n)]


def test_a_bucket_reads_only_what_was_written_since_the_last_one(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put_teacher_labels(store, _chunk(30, 0), "c1")
    first = curate(store, SPEC)
    assert first is not None and first.labels_seen == 30 and first.watermark is not None
    put_teacher_labels(store, _chunk(20, 30), "c2")
    reads = _reads(store)
    second = curate(store, SPEC)
    assert second is not None and second.labels_seen == 20 and second.new is not None and second.new.total == 20
    assert keyspace.labels("teacher", TASK, "c2") in reads and not [k for k in reads if "c1" in k]
    assert [t.version for t in second.selection] == ["v0001", "v0002"] and second.counts.total == 50
    # An entry that landed late (its stamp before the watermark, within the lag) is still read...
    assert second.watermark is not None
    put_teacher_labels(store, _chunk(5, 50), "c3", stamp=keyspace.shift_stamp(second.watermark.written, -60))
    third = curate(store, SPEC, lag_s=300)
    assert third is not None and third.labels_seen == 5
    # ...once; and one later than the lag is not (the documented limit of the watermark).
    put_teacher_labels(store, _chunk(5, 55), "c4", stamp=keyspace.shift_stamp(second.watermark.written, -600))
    assert curate(store, SPEC, lag_s=300) is None
    train, val = read_training_set(store, TASK, "v0003")
    assert len(train) + len(val) == 55 and {r["content_hash"] for r in train} | {r["content_hash"] for r in val} == {
        f"{i:032x}" for i in range(55)}


def test_the_first_bucket_reads_every_label_object_a_bounded_window_at_a_time(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for n in range(5):  # written before the write log existed
        put_teacher_labels(store, _chunk(10, 10 * n), f"old{n}", logged=False)
    for n in range(2):
        put_teacher_labels(store, _chunk(10, 50 + 10 * n), f"new{n}")
    seen = []
    while (manifest := curate(store, SPEC, max_rows=25)) is not None:
        seen.append(manifest.labels_seen)
        assert manifest.counts.total <= 25  # the training set holds at most max_rows
        train, val = read_training_set(store, TASK, manifest.version)
        assert len(train) + len(val) <= 25
    assert seen == [30, 30, 10]  # whole objects until max_rows is reached; each read once
    put_teacher_labels(store, _chunk(10, 70), "new2")  # then the write log, after where the first bucket found it
    reads = _reads(store)
    last = curate(store, SPEC, max_rows=25)
    assert last is not None and last.labels_seen == 10 and not [k for k in reads if "old" in k or "new0" in k]


def test_the_training_set_is_capped_newest_first_then_a_stratified_sample_human_rows_always() -> None:
    segments = [Segment("v1", SplitCounts(800, 200), SplitCounts(8, 2)), Segment("v2", SplitCounts(400, 100),
                SplitCounts(0, 0)), Segment("v3", SplitCounts(80, 20), SplitCounts(0, 0))]
    takes = {t.version: t for t in plan_selection(segments, 300)}
    total = sum(t.train + t.val for t in takes.values())
    assert total == 300
    assert (takes["v3"].train, takes["v3"].val) == (80, 20)  # the newest bucket, whole
    assert takes["v1"].train >= 8 and takes["v1"].val >= 2  # every human row
    # Beyond the newest half (145 rows: v3 and 45 of v2), the older rows at one rate for every bucket.
    v1_rate = (takes["v1"].train + takes["v1"].val - 10) / 990
    v2_rate = (takes["v2"].train + takes["v2"].val - 45) / 455
    assert abs(v1_rate - v2_rate) < 0.01 and 0.09 < v1_rate < 0.11
    assert plan_selection(segments, 10**6) == [Take(s.version, s.rows.train, s.rows.val) for s in segments]
    humans = [Segment("v1", SplitCounts(40, 10), SplitCounts(40, 10)), Segment("v2", SplitCounts(50, 5),
              SplitCounts(0, 0))]
    assert plan_selection(humans, 20) == [Take("v1", 40, 10), Take("v2", 0, 0)]  # human rows beyond the cap
