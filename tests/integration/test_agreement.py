"""Live student-teacher agreement end to end: shadow chunks from the producer, the student's shadow path
on an OpenAI-protocol student server, pairing in Redis, the monitor's cosine, drift mark and rollback
(real Redis, the store, the fake OpenAI server, the sentence embedder)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from rich.console import Console
from structlog.testing import capture_logs

from labelq import keyspace
from labelq.agreement import offer_shadow, offer_teacher, read_agreement
from labelq.app.cli.status import _render_status
from labelq.audit import audit
from labelq.curation_schedule import forced, is_due, record_curated, teacher_labels
from labelq.export import latest_labels
from labelq.keyspace import Stat
from labelq.records import commit_chunk
from labelq.registry import Registry
from labelq.schemas import SHADOW_ROUTE, LabelRecord, ShadowRecord
from labelq.settings import Settings
from labelq.status import gather
from labelq.store import open_store
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.helpers import jsonl_objects, keys_without_ttl, queued_chunks, write_jsonl
from tests.support.openai_server import FakeOpenAI
from tests.support.student import TASK, publish_adapter

pytestmark = pytest.mark.integration
TEACHER_LABEL = f"Labels with {TASK}-v1"  # what the fake student server answers with adapter v1


@pytest.fixture
def student_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def live(settings: Settings, student_server: FakeOpenAI) -> Settings:
    return settings.model_copy(update={
        "curation_seed_size": 10, "routing_sample_rate": 0.5, "chunk_size": 16, "drift_min_samples": 20,
        "drift_floor_exact": 0.5, "drift_floor_cosine": 0.5, "drift_floor_within": 0.9,
        "student_backend": "openai", "student_base_url": student_server.base_url, "auto_rollback": False})


def adapter_files(tmp_path: Path, name: str) -> Path:
    """An adapter folder as the store keeps it (the OpenAI-protocol student server only gets its path)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes(orjson.dumps({"r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(name.encode())
    return folder


def student_runtime(settings: Settings, client: redis.Redis):  # type: ignore[no-untyped-def]
    from labelq.engines.openai_engine import OpenAIBackend
    from workers.student.labeler import StudentRuntime

    return StudentRuntime(settings, open_store(settings), client,
                          backend_factory=lambda s: OpenAIBackend(s, "base-model"))


def work_the_queues(settings: Settings, client: redis.Redis, *, shadow_first: bool) -> dict[str, int]:
    """What the workers do with the queued chunks: the teacher labels seed and sample chunks (and offers
    the sample's labels), students label steady chunks, and shadow chunks go through the student's
    shadow path on the OpenAI-protocol server; then the queues are emptied. Sessions per route."""
    from workers.student.shadow import run_shadow_chunk, shadow_adapter

    store = open_store(settings)
    runtime = student_runtime(settings, client)
    routes: dict[str, int] = {}

    def teacher() -> None:
        for chunk in queued_chunks(settings, client, "teacher"):
            records = [LabelRecord(session_id=s.session_id, content_hash=s.content_hash, task=TASK,
                                   label=TEACHER_LABEL, source="teacher", model="gpt", prompt_version="p",
                                   words=4, chunk_id=chunk.chunk_id, flags=[f"route:{chunk.route}"])
                       for s in chunk.sessions]
            commit_chunk(settings, store, client, stage="teacher", task=TASK, chunk_id=chunk.chunk_id,
                         records=records, dead_letters=[], inputs=list(chunk.sessions))
            if chunk.route == "sample":
                offer_teacher(settings, client, TASK, records)
            routes[chunk.route] = routes.get(chunk.route, 0) + len(chunk.sessions)

    def student() -> None:
        for chunk in queued_chunks(settings, client, "student"):
            routes[chunk.route] = routes.get(chunk.route, 0) + len(chunk.sessions)
            if chunk.route == SHADOW_ROUTE:
                outcome = run_shadow_chunk(runtime, chunk, shadow_adapter(runtime, TASK))
                assert outcome.status == "shadow" and outcome.shadowed == len(chunk.sessions)
                continue
            records = [LabelRecord(session_id=s.session_id, content_hash=s.content_hash, task=TASK,
                                   label="Browses shoes", source="student", model="m", prompt_version="p",
                                   words=2, chunk_id=chunk.chunk_id) for s in chunk.sessions]
            commit_chunk(settings, store, client, stage="student", task=TASK, chunk_id=chunk.chunk_id,
                         records=records, dead_letters=[])

    for step in ((student, teacher) if shadow_first else (teacher, student)):
        step()
    client.delete(keyspace.queue(settings, "teacher"), keyspace.queue(settings, "student"))
    runtime.backend.close()
    return routes


def test_a_pair_is_scored_once_whichever_half_comes_first(settings: Settings, redis_client: redis.Redis) -> None:
    def teacher(h: str) -> LabelRecord:
        return LabelRecord(session_id=h, content_hash=h, task=TASK, label="Buys a gift card.", source="teacher",
                           model="m", prompt_version="p", words=4, chunk_id="c" * 8)

    def shadow(h: str, label: str) -> ShadowRecord:
        return ShadowRecord(session_id=h, content_hash=h, task=TASK, adapter_version=3, label=label,
                            within_contract=True, chunk_id="s" * 8)

    assert offer_teacher(settings, redis_client, TASK, [teacher("a1")]) == []
    first = offer_shadow(settings, redis_client, TASK, [shadow("a1", "buys a gift card"), shadow("b2", "x")])
    assert [(p.version, p.exact, p.within) for p in first] == [(3, True, True)]
    assert offer_shadow(settings, redis_client, TASK, [shadow("a1", "again")]) == []  # the pair is gone
    second = offer_teacher(settings, redis_client, TASK, [teacher("b2")])
    assert [(p.student, p.exact) for p in second] == [("x", False)]
    [row] = read_agreement(settings, redis_client, TASK)
    assert (row.version, row.n, row.exact, row.within, row.cosine) == (3, 2, 1, 2, None)
    # The half that never meets its other, the windows, the index and the backlog all expire.
    assert not {k for k in keys_without_ttl(settings, redis_client) if ":agreement:" in k}
    assert 0 < redis_client.ttl(keyspace.agreement_pair(settings, TASK, "a1")) <= settings.agreement_pair_ttl_s


def test_shadow_agreement_degraded_mark_and_rollback(live: Settings, redis_client: redis.Redis,
                                                     tmp_path: Path) -> None:
    from labelq.metrics import QueueDepthCollector
    from trainer.auto import curate_if_due
    from trainer.monitor import monitor_quality

    settings, client, store = live, redis_client, open_store(live)
    publish_adapter(settings, client, adapter_files(tmp_path, "v1"), 1)

    # Phase 1, v1 serves: the sample goes to the teacher and, as shadow chunks, to the student queue.
    summary = run_ingest(settings, [str(write_jsonl(tmp_path / "a.jsonl", list(generate(110, seed=5))))],
                         client=client)
    sample = {s.content_hash for c in queued_chunks(settings, client, "teacher") if c.route == "sample"
              for s in c.sessions}
    shadowed = {s.content_hash for c in queued_chunks(settings, client, "student") if c.route == SHADOW_ROUTE
                for s in c.sessions}
    assert len(sample) >= 30 and shadowed == sample and summary.shadowed == len(sample)
    assert summary.enqueued == 110 and sum(summary.queues.values()) == 110  # shadows are not sessions
    balance = audit(settings, client)  # shadow chunks are not in flight: each session is counted once
    assert balance.ok and balance.tasks[TASK].in_flight == 110
    routes = work_the_queues(settings, client, shadow_first=True)
    assert routes[SHADOW_ROUTE] == routes["sample"] == len(sample)
    [v1_row] = read_agreement(settings, client, TASK)
    assert (v1_row.version, v1_row.n, v1_row.exact, v1_row.within) == (1, len(sample), len(sample), len(sample))

    # Shadow records are not labels: export and audit count every session once.
    assert len(jsonl_objects(settings, keyspace.shadow_prefix(TASK))) == len(sample)
    labels = latest_labels(store)
    assert len(labels) == 110 and len({r.session_id for r in labels}) == 110
    stats = client.hgetall(keyspace.stats(settings, TASK))
    assert int(stats[Stat.LABELLED_STUDENT.encode()]) == routes["steady"]
    balance = audit(settings, client)
    assert balance.ok and balance.tasks[TASK].in_flight == 0 and balance.tasks[TASK].labelled == 110

    # Phase 2, v2 is promoted; its answers never match the teacher's (teacher first this time).
    publish_adapter(settings, client, adapter_files(tmp_path, "v2"), 2)
    run_ingest(settings, [str(write_jsonl(tmp_path / "b.jsonl", list(generate(110, seed=6))))], client=client)
    routes = work_the_queues(settings, client, shadow_first=False)
    rows = {r.version: r for r in read_agreement(settings, client, TASK)}
    assert rows[2].n == routes[SHADOW_ROUTE] >= 20 and rows[2].exact == 0 and rows[2].within == rows[2].n

    with capture_logs() as logs:
        states = monitor_quality(settings, store, client)  # auto_rollback off: the mark only
    state = states[TASK]
    assert state.version == 2 and state.degraded and state.reasons[0].startswith("exact 0.000 < 0.5")
    degraded = [e for e in logs if e["event"] == "quality_degraded"]
    assert len(degraded) == 1 and degraded[0]["window"]["n"] == rows[2].n
    rows = {r.version: r for r in read_agreement(settings, client, TASK)}  # the monitor embedded them all
    assert rows[1].cosine_n == rows[1].n and rows[1].cosine == pytest.approx(1.0, abs=1e-3)
    assert rows[2].cosine_n == rows[2].n and 0.5 < (rows[2].cosine or 0) < 1.0
    quality = gather(settings, client).tasks[TASK].quality
    assert quality is not None and quality.degraded and quality.version == 2 and quality.exact == 0.0
    console = Console(width=80, record=True, file=io.StringIO())
    _render_status(gather(settings, client), console)
    text = console.export_text()
    assert "agreement v2" in text and "quality degraded: exact 0.000 < 0.5" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    families = {f.name: {tuple(s.labels.values()): s.value for s in f.samples}
                for f in QueueDepthCollector(settings).collect()}
    assert families["labelq_quality_degraded"] == {(TASK,): 1.0}
    assert families["labelq_agreement_exact"] == {(TASK, "2"): 0.0}
    assert families["labelq_agreement_pairs"] == {(TASK, "2"): float(rows[2].n)}

    # Automatic rollback: v2's exact agreement is significantly below v1's last full window.
    record_curated(settings, client, TASK, teacher_labels(settings, client, TASK))  # the count says: not due
    assert not is_due(settings, client, TASK)
    rolling = settings.model_copy(update={"auto_rollback": True})
    with capture_logs() as logs:
        states = monitor_quality(rolling, store, client)
        again = monitor_quality(rolling, store, client)  # the serving version is v1 now: nothing more
    registry = Registry(settings, client, store)
    assert registry.serving(TASK) == 1 and registry.state(TASK)["history"] == [1]
    [event] = [e for e in logs if e["event"] == "adapter_rolled_back"]
    assert event["from"] == 2 and event["to"] == 1 and event["worse"] and event["p"] < 0.01
    assert event["current"]["n"] == rows[2].n and event["predecessor"]["exact_rate"] == 1.0
    record = orjson.loads(store.get_bytes(keyspace.adapter_rolled_back(TASK, 2)))
    assert record["from"] == 2 and record["to"] == 1 and registry.rolled_back(TASK) == {2}  # `adapter list`
    assert states[TASK].rolled_back is not None and again[TASK].version == 1 and not again[TASK].degraded
    assert again[TASK].rolled_back == states[TASK].rolled_back
    # The next curated bucket is due now, whatever the count; building it clears the request.
    assert forced(settings, client, TASK) and is_due(settings, client, TASK)
    curate_if_due(settings, store, client, TASK)
    assert not forced(settings, client, TASK)
