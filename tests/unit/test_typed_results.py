"""Typed results keep the JSON shapes they replaced: chunk outcomes, status, audit, training reports."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from labelq.errors import DecodeError
from labelq.ledger import CostSummary, ModelSpend, cost_summary
from labelq.outcomes import ChunkOutcome, StudentEngine, TeacherSpend
from labelq.routing import RoutingState
from labelq.snapshot import (
    AdapterStatus,
    AuditReport,
    QualityStatus,
    RedisMemoryStatus,
    StatusSnapshot,
    StatusTotals,
    TaskBalance,
    TaskStatus,
    TeacherStatus,
    Waiting,
)
from trainer.curation import Manifest, ReviewChanges, SplitCounts
from trainer.evaluate import EvalScores
from trainer.lora import TrainStats
from trainer.reports import ServingEval, TrainingReport


def test_chunk_outcome_logs_the_fields_each_stage_produced() -> None:
    teacher = ChunkOutcome(labelled=3, dead_lettered=1, handed_back=2,
                           teacher=TeacherSpend(model="gpt-4o", usd=0.01, input_tokens=30, output_tokens=9))
    assert teacher.as_log() == {"labelled": 3, "dead_lettered": 1, "handed_back": 2, "model": "gpt-4o",
                                "usd": 0.01, "input_tokens": 30, "output_tokens": 9}
    student = ChunkOutcome(labelled=60, escalated=3, dead_lettered=1,
                           student=StudentEngine(adapter_version=None, engine_s=1.5, backend="vllm",
                                                 student_usd=0.0003))
    assert student.as_log() == {"labelled": 60, "dead_lettered": 1, "escalated": 3, "adapter_version": None,
                                "engine_s": 1.5, "backend": "vllm", "student_usd": 0.0003}
    assert ChunkOutcome(status="poison_chunk", dead_lettered=1).as_log() == {"status": "poison_chunk",
                                                                             "dead_lettered": 1}
    assert ChunkOutcome(status="poison_chunk_split", split_sessions=8).as_log() == {
        "status": "poison_chunk_split", "sessions": 8}
    assert ChunkOutcome(status="decode_error").as_log() == {"status": "decode_error"}
    orjson.dumps(student.as_log())  # JSON-able: it is the Celery task's return value


def _snapshot() -> StatusSnapshot:
    task = TaskStatus(
        ingested=300, duplicates=2, labelled_teacher=50, labelled_student=240, escalated_student=4,
        student_engine_s=12.5, dead_lettered=3,
        routing=RoutingState(phase="steady", seeded=50, seed_size=50, sample_rate=0.1, stratify_by=None),
        cost=cost_summary(teacher_usd=1.0, teacher_labels=50, student_engine_s=12.5, student_labels=240,
                          usd_per_gpu_hour=2.0),
        dead_letter={"student_too_many_words": 3},
        adapter=AdapterStatus(current=2, pinned=None),
        teacher=TeacherStatus(cost_usd=1.0, cache_hits=7,
                              models={"gpt-4o": ModelSpend(calls=50, input_tokens=9000, output_tokens=400, usd=1.0)},
                              budget_usd=50.0, budget_spent_usd=1.0, budget_reserved_usd=0.0,
                              budget_remaining_usd=49.0, budget_period="day", budget_period_id="2026-11-21",
                              budget_resets_at="2026-11-22T00:00:00+00:00", paused=None),
        quality=QualityStatus(version=2, window_start=1_700_000_000, n=120, exact=0.41, cosine=0.83, within=0.99,
                              degraded=True, reasons=["cosine 0.583 < 0.6"], rolled_back=None,
                              checked_at=1_700_000_100.0),
    )
    return StatusSnapshot(queues={"teacher": 0, "student": 1, "trainer": 0}, dead_letter={"invalid_json": 1},
                          tasks={"session-label": task},
                          totals=StatusTotals(ingested=300, duplicates=2, dead_lettered=1, queued_chunks=1),
                          waiting={"teacher": Waiting(on="store", kind="outage", since=1_700_000_000.0,
                                                      detail="ServiceUnavailable: S3 error 500")},
                          redis_memory=RedisMemoryStatus(used_bytes=900, max_bytes=1000, share=0.9, high_water=0.8,
                                                         reserve_bytes=0))


def test_status_json_keeps_its_shape_and_round_trips() -> None:
    snapshot = _snapshot()
    data = snapshot.to_dict()
    assert list(data) == ["queues", "dead_letter", "tasks", "totals", "waiting", "redis_memory"]
    assert data["redis_memory"] == {"used_bytes": 900, "max_bytes": 1000, "share": 0.9, "high_water": 0.8,
                                    "reserve_bytes": 0}
    assert data["waiting"]["teacher"]["on"] == "store"
    task = data["tasks"]["session-label"]
    assert list(task) == ["ingested", "duplicates", "labelled_teacher", "labelled_student", "escalated_student",
                          "student_engine_s", "dead_lettered", "routing", "cost", "dead_letter", "adapter", "teacher",
                          "parked_chunks", "quality"]
    assert task["routing"] == {"phase": "steady", "seeded": 50, "seed_size": 50, "sample_rate": 0.1,
                               "stratify_by": None}
    assert list(task["cost"]) == ["teacher_usd", "student_usd", "teacher_per_1k_usd", "student_per_1k_usd",
                                  "savings"]
    assert task["adapter"] == {"current": 2, "pinned": None}
    assert task["quality"]["degraded"] and task["quality"]["n"] == 120 and task["quality"]["version"] == 2
    assert task["teacher"] == {"cost_usd": 1.0, "cache_hits": 7, "models": {"gpt-4o": {
        "calls": 50, "input_tokens": 9000, "output_tokens": 400, "usd": 1.0}}, "budget_usd": 50.0,
        "budget_spent_usd": 1.0, "budget_reserved_usd": 0.0, "budget_remaining_usd": 49.0,
        "budget_period": "day", "budget_period_id": "2026-11-21", "budget_resets_at": "2026-11-22T00:00:00+00:00",
        "paused": None}
    assert data["totals"] == {"ingested": 300, "duplicates": 2, "dead_lettered": 1, "queued_chunks": 1,
                              "parked_chunks": 0}
    wire = orjson.dumps(data)
    assert StatusSnapshot.from_dict(wire) == snapshot
    assert orjson.dumps(StatusSnapshot.from_dict(orjson.loads(wire)).to_dict()) == wire
    assert snapshot.tasks["session-label"].adapter.serving == 2


def test_status_from_dict_refuses_a_wrong_shape() -> None:
    data = _snapshot().to_dict()
    del data["tasks"]["session-label"]["teacher"]["cache_hits"]
    with pytest.raises(DecodeError, match="status snapshot"):
        StatusSnapshot.from_dict(data)


def test_cost_summary_fields() -> None:
    cost = cost_summary(teacher_usd=2.0, teacher_labels=100, student_engine_s=0.0, student_labels=0,
                        usd_per_gpu_hour=1.0)
    assert cost == CostSummary(teacher_usd=2.0, student_usd=0.0, teacher_per_1k_usd=20.0,
                               student_per_1k_usd=None, savings=0.0)


def test_audit_json_round_trips() -> None:
    report = AuditReport(ok=False, tasks={"t": TaskBalance(ingested=10, labelled=4, labelled_teacher=1,
                                                          labelled_student=3, dead_lettered=1, in_flight=0,
                                                          gap=5)})
    data = report.to_dict()
    assert data == {"ok": False, "tasks": {"t": {"ingested": 10, "labelled": 4, "labelled_teacher": 1,
                                                 "labelled_student": 3, "dead_lettered": 1, "in_flight": 0,
                                                 "gap": 5, "claimed_not_enqueued": 0}}}
    assert AuditReport.from_dict(orjson.dumps(data)) == report


def test_training_report_is_the_metrics_file() -> None:
    scores = EvalScores(n=20, exact_match=0.5, cosine=0.9, within_contract=1.0, mean_words=5.5,
                        words_histogram={"5": 10, "6": 10})
    report = TrainingReport(
        task="session-label", version=2, dataset_version="v0002", prompt_version="p1", base_model="tiny",
        train=TrainStats(steps=12, final_loss=0.4, train_seconds=3.2, device="cpu", dtype="float32", examples=180,
                         qlora=False),
        base=EvalScores.empty(), adapter=scores, serving=ServingEval(1, scores), promoted=True,
        gate="no worse than the serving adapter on the same val set", created_at="2026-01-01T00:00:00.000+00:00",
        seconds=9.5)
    data = report.to_dict()
    assert list(data) == ["task", "version", "dataset_version", "prompt_version", "base_model", "base_hash", "train", "base",
                          "adapter", "serving", "promoted", "gate", "created_at", "seconds", "content_hash",
                          "checks", "calibration"]
    assert data["serving"] == {"version": 1, "n": 20, "exact_match": 0.5, "cosine": 0.9, "within_contract": 1.0,
                               "mean_words": 5.5, "words_histogram": {"5": 10, "6": 10}}
    assert data["base"] == {"n": 0, "exact_match": 0.0, "cosine": 0.0, "within_contract": 0.0, "mean_words": 0.0,
                            "words_histogram": {}}
    assert TrainingReport.from_dict(orjson.loads(orjson.dumps(data))) == report
    first = TrainingReport.from_dict({**data, "serving": None, "base_hash": "extra keys are ignored"})
    assert first.serving is None
    older = {k: v for k, v in data["adapter"].items() if k != "words_histogram"}  # before the histogram was kept
    assert TrainingReport.from_dict({**data, "adapter": older}).adapter.words_histogram == {}
    with pytest.raises(DecodeError):
        TrainingReport.from_dict({"exact_match": 0.2})
    with pytest.raises(DecodeError):
        TrainingReport.from_dict([1, 2])


def test_manifest_has_a_review_key_only_after_a_review() -> None:
    manifest = Manifest(task="t", version="v0001", prompt_version="p1", created_at="now",
                        counts=SplitCounts(train=8, val=2), sources={"teacher": 10}, dropped={},
                        labels_seen=12, hashes={"train": "a", "val": "b"}, label_ids=["x"])
    assert "review" not in manifest.to_dict() and "label_ids" not in manifest.summary()
    reviewed = replace(manifest, review=ReviewChanges(edited=1, dropped=2))
    assert reviewed.to_dict()["review"] == {"edited": 1, "dropped": 2}
    assert Manifest.from_dict(orjson.dumps(reviewed.to_dict())) == reviewed
    assert Manifest.from_dict(manifest.to_dict()) == manifest
