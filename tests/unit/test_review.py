"""The human review gate (trainer/review.py) on a local store: no worker, no Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelq import keyspace
from labelq.errors import ConfigError
from labelq.keyspace import BucketFile
from labelq.spec import load_spec
from labelq.store import LocalStore
from tests.support.labels import label_record, put_teacher_labels
from trainer import review
from trainer.curation import curate, read_rows, read_training_set
from trainer.service import ready_buckets

SPEC = load_spec("session-label")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    """40 teacher labels and a bucket v0001 curated from them, waiting for review."""
    store = LocalStore(tmp_path)
    put_teacher_labels(store, [label_record(f"{i:032x}", "Searches shoes and pays by card") for i in range(40)])
    manifest = curate(store, SPEC, require_review=True)
    assert manifest is not None and manifest.version == "v0001"
    return store


def test_a_bucket_under_review_is_not_ready_until_approved(store: LocalStore) -> None:
    assert ready_buckets(store) == [] and review.pending(store, SPEC.name) == ["v0001"]
    review.approve(store, SPEC.name, "v0001")
    assert ready_buckets(store) == [(SPEC.name, "v0001")] and review.pending(store, SPEC.name) == []
    with pytest.raises(ConfigError, match="not waiting for review"):
        review.reject(store, SPEC.name, "v0001", "too late")


def test_a_rejected_bucket_is_never_ready(store: LocalStore) -> None:
    review.reject(store, SPEC.name, "v0001", "spot check failed")
    assert ready_buckets(store) == [] and review.pending(store, SPEC.name) == []
    assert store.get_bytes(keyspace.bucket_file(SPEC.name, "v0001", BucketFile.REJECTED)) == b'{"reason":"spot check failed"}'
    with pytest.raises(ConfigError, match="not waiting for review"):
        review.approve(store, SPEC.name, "v0001")


def test_edits_relabel_and_drop_rows_then_approve_and_win_later(store: LocalStore) -> None:
    rows = read_rows(store, SPEC.name, "v0001")
    with pytest.raises(ConfigError, match="output contract"):
        review.apply_edits(store, SPEC, "v0001", [{"content_hash": rows[0].content_hash,
                                                   "label": "one two three four five six seven eight nine"}])
    with pytest.raises(ConfigError, match="no such session"):
        review.apply_edits(store, SPEC, "v0001", [{"content_hash": "f" * 32, "drop": True}])
    assert review.pending(store, SPEC.name) == ["v0001"]  # a refused edits file changes nothing
    edits = [{"content_hash": rows[0].content_hash, "label": "Browses the gift card page"},
             {"session_id": rows[1].session_id, "drop": True}]
    assert review.apply_edits(store, SPEC, "v0001", edits) == review.ReviewChanges(edited=1, dropped=1)
    assert ready_buckets(store) == [(SPEC.name, "v0001")] and review.pending(store, SPEC.name) == []
    after = {r.content_hash: r for r in read_rows(store, SPEC.name, "v0001")}
    assert len(after) == len(rows) - 1 and rows[1].content_hash not in after
    assert after[rows[0].content_hash].label == "Browses the gift card page"
    assert after[rows[0].content_hash].source == "human"
    # The human label is kept for later buckets and wins over the teacher's, even a later one's.
    assert store.exists(keyspace.review_labels(SPEC.name, "v0001"))
    assert curate(store, SPEC, require_review=True) is None  # nothing new: the review's labels are in v0001
    relabel = label_record(rows[0].content_hash, "Searches shoes and pays by card", at="2026-02-01T00:00:00")
    put_teacher_labels(store, [relabel, *(label_record(f"{i:032x}", "Buys a gift card") for i in range(40, 45))], "c2")
    later = curate(store, SPEC, require_review=True)
    assert later is not None and later.version == "v0002" and later.labels_seen == 6
    assert later.sources == {"teacher": 38 + 6, "human": 1}  # as selected, before newer rows replace older ones
    review.approve(store, SPEC.name, "v0002")
    train, val = read_training_set(store, SPEC.name, "v0002")
    final = {r["content_hash"]: r for r in train + val}
    assert len(final) == 44 and rows[1].content_hash not in final
    assert final[rows[0].content_hash]["label"] == "Browses the gift card page"
    assert final[rows[0].content_hash]["source"] == "human"


@pytest.mark.parametrize(("data", "why"), [
    (b'{"label": "Buys"}\n', "line 1: needs content_hash or session_id"),
    (b'{"session_id": "s"}\n', "line 1: needs a label"),
    (b'{"session_id": "s", "drop": true}\n{"content_hash": "h", "label": 3}\n', "line 2: needs a label"),
    (b"{broken\n", "edits file"),
])
def test_an_edits_file_is_refused_with_its_line(data: bytes, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        review.parse_edits(data)


def test_an_edits_file_of_labels_and_drops_is_accepted() -> None:
    data = b'{"session_id": "s", "drop": true}\n{"content_hash": "h", "label": "Buys a gift card"}\n'
    assert review.parse_edits(data) == [{"session_id": "s", "drop": True},
                                        {"content_hash": "h", "label": "Buys a gift card"}]


def test_human_rows_stay_in_every_later_training_set_whatever_the_cap(store: LocalStore) -> None:
    rows = read_rows(store, SPEC.name, "v0001")
    edited = {r.content_hash for r in rows[:3]}
    review.apply_edits(store, SPEC, "v0001", [{"content_hash": h, "label": "Browses the gift card page"}
                                              for h in edited])
    for n in range(4):  # four more buckets of 20 new labels, a training set of at most 10 rows
        put_teacher_labels(store, [label_record(f"{i:032x}", "Buys a gift card")
                                   for i in range(100 + 20 * n, 120 + 20 * n)], f"more{n}")
        manifest = curate(store, SPEC, max_rows=10)
        assert manifest is not None and manifest.counts.total == 10
        train, val = read_training_set(store, SPEC.name, manifest.version)
        assert len(train) + len(val) == 10
        humans = {r["content_hash"] for r in train + val if r["source"] == "human"}
        assert humans == edited


def test_a_rejected_bucket_is_left_out_of_later_training_sets(store: LocalStore) -> None:
    review.reject(store, SPEC.name, "v0001", "spot check failed")
    put_teacher_labels(store, [label_record(f"{i:032x}", "Buys a gift card") for i in range(100, 110)], "c2")
    later = curate(store, SPEC)
    assert later is not None and later.labels_seen == 10  # v0001's labels are not read again
    assert [t.version for t in later.selection] == [later.version] and later.counts.total == 10
