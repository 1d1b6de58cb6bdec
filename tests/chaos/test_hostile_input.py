"""10,500 hostile inputs through ingest, real teacher and student workers: no crash, every input
accounted for, no store or Redis key outside its prefix, no label outside the output contract,
no session content in logs or metrics."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.audit import audit
from labelq.contract import check
from labelq.hashing import content_hash
from labelq.redis_server import free_port
from labelq.settings import Settings
from labelq.spec import load_spec
from producer.run import run_ingest
from tests.support.chaos import (
    Fleet,
    fake_adapter,
    record_result,
    tally,
    tally_row,
    wait_until,
)
from tests.support.helpers import jsonl_objects
from tests.support.hostile import CANARY, HUGE_BYTES, hostile_inputs
from tests.support.openai_server import FakeOpenAI
from tests.support.student import publish_adapter
from tests.support.teacher import API_KEY
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
N = 10_500
STORE_TOP = {"labels", "inputs", "deadletter", "adapters", "registry", "secrets", "budget", "written", "payloads", "curated"}


def test_hostile_inputs_are_all_accounted_for_and_contained(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = settings.model_copy(update={"chunk_size": 50, "curation_seed_size": 300,
                                           "max_session_bytes": HUGE_BYTES})
    first = orjson.dumps({"session_id": "first", "events": [{"type": "page_view", "url": "/", "text": CANARY}]})
    inputs = list(hostile_inputs(N, seed=7401))
    lines = [first] + [line for _, line in inputs]
    categories = [None] + [c for c, _ in inputs]
    source = tmp_path / "hostile.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    started = time.monotonic()
    keys_before = set(redis_client.scan_iter(count=1000))  # the server is shared with other tests

    summary = run_ingest(settings, [str(source)], client=redis_client)
    # Ingest: every line read once, and ended as enqueued, duplicate or rejected with its category's reason.
    assert summary.read == len(lines) and summary.duplicates == 0
    assert summary.enqueued + sum(summary.rejected.values()) == len(lines)
    rejected = {d["line"]: d for d in jsonl_objects(settings, keyspace.dead_letters_prefix("ingest"))}
    assert len(rejected) == sum(summary.rejected.values())
    accepted_hashes, accepted_ids = set(), {}
    for line_no, (category, line) in enumerate(zip(categories, lines, strict=True), 1):
        if category is None or category.accepted:
            assert line_no not in rejected, (category, rejected.get(line_no))
            session = orjson.loads(line)
            accepted_hashes.add(content_hash(session))
            accepted_ids[content_hash(session)] = str(session["session_id"])
        else:
            assert rejected[line_no]["reason"] in category.reasons, (category.name, rejected[line_no])
            assert rejected[line_no]["source"] == str(source)
    assert summary.enqueued == len(accepted_hashes)

    metrics_port = free_port()
    publish_adapter(settings, redis_client, fake_adapter(tmp_path), 1)
    with FakeOpenAI() as fake:
        env = worker_env(settings, LABELQ_TEACHER_BACKEND="openai", LABELQ_TEACHER_BASE_URL=fake.base_url,
                         LABELQ_TEACHER_API_KEY=API_KEY, LABELQ_TEACHER_CONCURRENCY="16", LABELQ_TEACHER_RPM="100000",
                         LABELQ_STUDENT_BACKEND="openai", LABELQ_STUDENT_BASE_URL=fake.base_url,
                         LABELQ_STUDENT_MODEL="served-base", LABELQ_MAX_SESSION_BYTES=str(HUGE_BYTES),
                         LABELQ_LOG_LEVEL="DEBUG")
        with Fleet(env, tmp_path) as fleet:
            fleet.start("teacher", LABELQ_METRICS_PORT=str(metrics_port))
            fleet.start("student")
            wait_until(lambda: tally(settings, accepted_hashes).done, 240, "every accepted session to end",
                       poll_s=1)
            final = tally(settings, accepted_hashes)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
            alive = all(p.poll() is None for ps in fleet.procs.values() for p in ps)
            logs = fleet.logs()
        hijacked = sum(1 for r in fake.requests if "HACKED" in str(r))
    balance = audit(settings, redis_client).tasks["session-label"]

    # Workers: nothing crashed, every accepted session ended exactly once.
    assert alive and b"chunk_failed" not in logs and b"Traceback" not in logs
    assert final.lost == 0 and final.duplicates == 0 and final.unexpected == 0
    assert balance.gap == 0 and balance.in_flight == 0
    # No label outside the output contract; ids (path-like ones included) kept exactly as given.
    spec = load_spec("session-label")
    records = jsonl_objects(settings, "labels/")
    assert records and all(check(r["label"], spec.contract).ok for r in records)
    assert all(r["session_id"] == accepted_ids[r["content_hash"]] for r in records)
    assert not any("HACKED" in r["label"] for r in records)
    # No store key outside its prefix: every file under the store root, none elsewhere.
    store_root = Path(settings.effective_store_url.removeprefix("file://")).resolve()
    for path in store_root.rglob("*"):
        assert path.resolve().is_relative_to(store_root)
        rel = path.relative_to(store_root)
        assert rel.parts[0] in STORE_TOP and ".." not in rel.parts, rel
    outside = {p.name for p in tmp_path.iterdir()} - {"store", "state", "hostile.jsonl", "adapter"}
    assert all(name.endswith(".log") for name in outside), outside
    # No Redis key outside this test's prefix (the server is shared: other tests' keys are left out).
    keys = set(redis_client.scan_iter(count=1000)) - keys_before
    assert keys and all(k.startswith(settings.redis_key_prefix.encode()) for k in keys)
    assert not any(b"passwd" in k or b"/.." in k for k in keys)
    # Session content never reaches logs or metrics (ids may).
    assert CANARY.encode() not in logs and CANARY.encode() not in metrics
    assert b"labelq_chunks" in metrics or b"labelq_" in metrics
    record_result(request, scenario="hostile input (10,500 generated bad inputs)",
                  load=f"{len(lines)} lines: {len(rejected)} rejected at ingest, {len(accepted_hashes)} accepted "
                       "and labelled by real teacher and student workers",
                  faults="broken JSON, huge strings, deep nesting, wrong types, NUL, invalid UTF-8, "
                         "path-like ids, prompt injection, control/bidi characters",
                  lost=final.lost + (summary.read - summary.enqueued - len(rejected)),
                  duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  rejected_by_reason=dict(Counter(d["reason"] for d in rejected.values())),
                  injection_answers_caught=hijacked, **tally_row(final))
