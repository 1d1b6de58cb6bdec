from __future__ import annotations

from pathlib import Path

import orjson

from labelq import keyspace
from labelq.keyspace import BucketFile
from labelq.spec import load_spec
from labelq.store import LocalStore
from tests.support.labels import label_record as rec
from tests.support.labels import put_teacher_labels
from trainer.curation import Manifest, curate, select_rows, split_of

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
    assert manifest.counts.train + manifest.counts.val == 50
    assert writes[-1] == keyspace.bucket_file("session-label", "v0001", BucketFile.READY)
    assert manifest.prompt_version == SPEC.prompt_version and len(manifest.label_ids) == 50
    # The file holds exactly the manifest's fields, and reads back equal (no "review" key before a review).
    stored = orjson.loads(store.get_bytes(keyspace.bucket_file("session-label", "v0001", BucketFile.MANIFEST)))
    assert list(stored) == ["task", "version", "prompt_version", "created_at", "counts", "sources", "dropped",
                            "labels_seen", "hashes", "label_ids"]
    assert stored["counts"] == {"train": manifest.counts.train, "val": manifest.counts.val}
    assert Manifest.from_dict(stored) == manifest
    second = curate(store, SPEC)
    assert second is not None and second.version == "v0002"
    assert curate(LocalStore(tmp_path / "empty"), SPEC) is None
