"""Incremental curation on an S3-protocol store (moto): the write log is listed after the watermark
(``StartAfter``, page by page), and the training set reads only the first rows of each selected file."""

from __future__ import annotations

import pytest

from labelq.spec import load_spec
from labelq.store import S3Store
from tests.support.labels import TASK, label_record, put_teacher_labels
from trainer.curation import curate, read_training_set

pytestmark = pytest.mark.integration


def test_a_second_bucket_lists_the_write_log_after_the_watermark(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store(s3_bucket, "deploy", endpoint_url=s3_endpoint, list_page_size=2)
    spec = load_spec(TASK)
    for n in range(3):
        put_teacher_labels(store, [label_record(f"{n:02x}{i:030x}", "Buys a gift card") for i in range(10)], f"c{n}")
    first = curate(store, spec)
    assert first is not None and first.labels_seen == 30
    put_teacher_labels(store, [label_record(f"ff{i:030x}", "Buys a gift card") for i in range(10)], "c3")
    listed: list[dict[str, object]] = []
    store._client.meta.events.register("before-parameter-build.s3.ListObjectsV2",
                                       lambda params, **_: listed.append(params))
    second = curate(store, spec, max_rows=25)
    assert second is not None and second.labels_seen == 10
    starts = [str(p.get("StartAfter", "")) for p in listed if "/written/" in str(p["Prefix"])]
    assert starts and all(s.startswith(f"deploy/written/teacher/{TASK}/") for s in starts)
    train, val = read_training_set(store, TASK, second.version)
    assert len(train) + len(val) == second.counts.total <= 25
    assert sum(1 for r in train + val if r["content_hash"].startswith("ff")) == 10  # the newest bucket, whole
