"""Teacher labels -> curated bucket -> LoRA adapter -> gate -> registry, on the tiny base."""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.engines import Adapter
from labelq.keyspace import AdapterFile, BucketFile
from labelq.registry import Registry
from labelq.settings import Settings
from labelq.store import open_store
from labelq.synth import generate
from tests.support.teacher import label_with_replay
from trainer.curation import curate
from trainer.gate import GateCheck
from trainer.reports import TrainingReport
from trainer.service import ready_buckets, train_bucket
from workers.student.labeler import StudentRuntime

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("torch")


@pytest.mark.timeout(900)  # three trainings and six evaluations (golden cases and calibration included)
def test_bucket_trains_promotes_and_gate_refuses_a_worse_adapter(
    settings: Settings, redis_client: redis.Redis, tiny_model: Path
) -> None:
    from labelq.spec import load_spec

    settings = settings.model_copy(update={"student_model": str(tiny_model)})
    store = open_store(settings)
    spec = load_spec("session-label")
    label_with_replay(settings, redis_client, list(generate(300, seed=61)))
    manifest = curate(store, spec)
    assert manifest is not None and manifest.counts.train > 200
    assert ready_buckets(store) == [("session-label", "v0001")]
    first = train_bucket(settings, store, redis_client, "session-label", "v0001")
    assert first is not None and first.promoted and first.version == 1, first and first.gate
    assert first.adapter.within_contract > first.base.within_contract
    # Every check passed and is recorded: the floors (the first version too), the shipped golden set,
    # and no serving adapter to compare with.
    checks = {c.name: c for c in first.checks}
    assert all(c.passed for c in first.checks) and checks["serving"].note == "no adapter serves yet"
    assert checks["floor_exact_match"] == GateCheck("floor_exact_match", True, first.adapter.exact_match, ">=",
                                                    settings.promote_floor_exact)
    assert checks["golden"].value is not None and checks["golden"].note.startswith(("12/12", "11/12"))
    # The confidence threshold students will use, calibrated on the val split (exact match 0.9+ on it).
    calibration = first.calibration
    assert calibration is not None and calibration.calibrated and calibration.answers == first.adapter.n
    assert 0 < calibration.threshold < 1 and calibration.curve[-1].coverage == 1.0
    chosen = next(p for p in calibration.curve if p.threshold == calibration.threshold)
    assert chosen.precision >= settings.student_target_precision
    student = StudentRuntime(settings, store, redis_client)  # reads it from metrics.json, engine not started
    assert student.confidence_threshold(Adapter("session-label", 1, "", 0)) == calibration.threshold
    assert first.adapter.mean_words < first.base.mean_words
    registry = Registry(settings, redis_client, store)
    assert TrainingReport.from_dict(registry.metrics("session-label", 1)) == first
    assert registry.serving("session-label") == 1 and ready_buckets(store) == []
    for name in AdapterFile:
        assert store.exists(keyspace.adapter_file("session-label", 1, name))
    # The adapter records the base it was trained on: the tiny model's manifest hash.
    base_hash = json.loads((tiny_model / "labelq_model.json").read_text())["base_hash"]
    assert first.base_hash == base_hash
    train_config = store.get_bytes(keyspace.adapter_file("session-label", 1, AdapterFile.TRAIN_CONFIG))
    assert orjson.loads(train_config)["base_hash"] == base_hash
    # A worse bucket: every label wrong. Its adapter is evaluated on its own val set against the
    # serving adapter there, and refused.
    for split in (BucketFile.TRAIN, BucketFile.VAL):
        rows = [orjson.loads(line) for line in
                store.get_bytes(keyspace.bucket_file("session-label", "v0001", split)).splitlines()]
        if split == BucketFile.TRAIN:
            for row in rows:
                row["label"] = "Buys a gift card"
        store.put_bytes(keyspace.bucket_file("session-label", "v0002", split),
                        b"".join(orjson.dumps(r) + b"\n" for r in rows))
    store.put_bytes(keyspace.bucket_file("session-label", "v0002", BucketFile.READY), b"")
    # Redis loses the adapter pointer: the trainer rebuilds it from the store before its gate, so the
    # worse adapter is still compared with v1 (not promoted as if no adapter served).
    redis_client.delete(keyspace.adapter_current(settings, "session-label"),
                        keyspace.adapter_history(settings, "session-label"))
    second = train_bucket(settings, store, redis_client, "session-label", "v0002")
    assert second is not None and not second.promoted and second.gate.startswith("refused: ")
    failed = {c.name for c in second.checks if not c.passed}
    assert {"floor_exact_match", "golden", "serving_exact_match"} <= failed, second.gate
    assert second.serving is not None and second.serving.version == 1
    assert registry.metrics("session-label", 2)["checks"] == [c.to_dict() for c in second.checks]
    assert registry.metrics("session-label", 2)["serving"] == second.serving.to_dict()
    assert TrainingReport.from_dict(registry.metrics("session-label", 2)) == second
    assert registry.serving("session-label") == 1 and registry.versions("session-label") == [1, 2]


def test_a_locked_bucket_is_left_to_its_trainer(settings: Settings, redis_client: redis.Redis) -> None:
    redis_client.set(keyspace.train_lock(settings, "session-label", "v0009"), "1")
    assert train_bucket(settings, open_store(settings), redis_client, "session-label", "v0009") is None


def test_trainer_against_s3_and_its_adapter_changes_vllm_output(
        settings: Settings, redis_client: redis.Redis, tiny_model: Path, s3_endpoint: str, s3_bucket: str,
        vllm_backend: object) -> None:
    from labelq.prompts import student_prompt
    from labelq.spec import load_spec
    from trainer.tasks import run_once
    from workers.student.cache import AdapterCache

    settings = settings.model_copy(update={
        "student_model": str(tiny_model),
        "store_url": f"s3://{s3_bucket}/deploy", "s3_endpoint_url": s3_endpoint, "curation_seed_size": 200})
    store = open_store(settings)
    label_with_replay(settings, redis_client, list(generate(200, seed=62)))
    [metrics] = run_once(settings)  # automatic curation at seed_size, then training, all in S3
    assert metrics.promoted and metrics.dataset_version == "v0001"
    assert store.exists(keyspace.bucket_file("session-label", "v0001", BucketFile.TRAINED))
    assert store.exists(keyspace.adapter_file("session-label", 1, AdapterFile.METRICS))
    assert run_once(settings) == []  # nothing new is due
    assert metrics.content_hash is not None
    assert Registry(settings, redis_client, store).content_hash("session-label", 1) == metrics.content_hash
    adapter = AdapterCache(store, settings.state_dir / "cache").get("session-label", 1, metrics.content_hash)
    spec = load_spec("session-label")
    prompts = [student_prompt(spec, settings, s) for s in generate(24, seed=63)]
    base = vllm_backend.generate(prompts, None, 24)  # type: ignore[attr-defined]
    tuned = vllm_backend.generate(prompts, adapter, 24)  # type: ignore[attr-defined]
    assert sum(b.text != t.text for b, t in zip(base, tuned, strict=True)) >= 20
    assert max(len(t.text.split()) for t in tuned) <= 8


CRASH_SCRIPT = """
from labelq.redis_server import connect
from labelq.settings import load_settings
from labelq.store import open_store
import trainer.lora as lora
from trainer.service import train_bucket

real = lora.train_lora

def train_loudly(*args, **kwargs):  # the real training, printing each step for the test to see
    return real(*args, **{**kwargs, "on_step": lambda step, total, loss: print("STEP", step, flush=True)})

lora.train_lora = train_loudly
settings = load_settings()
train_bucket(settings, open_store(settings), connect(settings), "session-label", "v0001")
"""


def test_a_trainer_killed_mid_training_leaves_no_adapter_and_the_bucket_is_retrained(
        settings: Settings, redis_client: redis.Redis, tiny_model: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from labelq.spec import load_spec
    from tests.support.worker_procs import ROOT, worker_env

    settings = settings.model_copy(update={"student_model": str(tiny_model), "trainer_lock_s": 2})
    store = open_store(settings)
    label_with_replay(settings, redis_client, list(generate(120, seed=64)))
    assert curate(store, load_spec("session-label")) is not None
    env = worker_env(settings, LABELQ_STUDENT_MODEL=str(tiny_model), LABELQ_TRAINER_LOCK_S="2")
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until it is training
        if line.startswith(b"STEP 3"):
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # A killed trainer leaves only its claim: no adapter files, and its number is never used again.
    assert list(store.list(keyspace.adapter_prefix("session-label"))) == [
        keyspace.adapter_file("session-label", 1, AdapterFile.CLAIM)]
    assert Registry(settings, redis_client, store).versions("session-label") == []
    assert ready_buckets(store) == [("session-label", "v0001")]
    lock = keyspace.train_lock(settings, "session-label", "v0001")
    assert train_bucket(settings, store, redis_client, "session-label", "v0001") is None  # still locked
    deadline = time.monotonic() + 10
    while redis_client.exists(lock) and time.monotonic() < deadline:
        time.sleep(0.2)
    metrics = train_bucket(settings, store, redis_client, "session-label", "v0001")  # the lock expired
    assert metrics is not None and metrics.version == 2 and metrics.promoted
    assert ready_buckets(store) == []


def test_a_json_contract_runs_the_whole_loop_under_structured_outputs(
        settings: Settings, redis_client: redis.Redis, tiny_model: Path, vllm_backend: object) -> None:
    """location-json (a JSON schema contract): the teacher is asked with response_format, its labels are
    curated and trained on, and the student decodes under the schema (vLLM structured outputs): every
    label parses and validates."""
    import labelq
    from labelq.contract import check
    from labelq.spec import load_spec
    from tests.support.openai_server import FakeOpenAI
    from tests.support.student import student_records
    from tests.support.teacher import make_chunk, teacher_records, teacher_settings
    from trainer.tasks import run_once
    from workers.student.labeler import StudentRuntime, run_student_chunk
    from workers.teacher.tasks import run_teacher_chunk

    task = "location-json"
    # The trainer evaluates with transformers, which cannot decode under the schema: the tiny adapter taught
    # by 60 labels writes free text there (exact 0, within contract 0 measured), so the floors are off here;
    # the student below decodes under the schema with vLLM.
    s = settings.model_copy(update={"student_model": str(tiny_model), "curation_seed_size": 60,
                                    "student_escalation_share": 0.0, "promote_floor_exact": 0.0,
                                    "promote_floor_cosine": 0.0, "promote_floor_within_contract": 0.0,
                                    "specs_dir": Path(labelq.__file__).parent / "specs" / "examples"})
    spec, store = load_spec(task, s.specs_dir), open_store(s)
    sessions = list(generate(80, seed=64))
    with FakeOpenAI() as fake:
        ts = teacher_settings(s, fake.base_url)
        for start in (0, 40):
            run_teacher_chunk(ts, store, redis_client, make_chunk(sessions[start:start + 40], task=task),
                              requeue=lambda chunk, items: pytest.fail("nothing is handed back"))
        formats = [r["body"]["response_format"] for r in fake.requests]
    assert len(formats) == 80 and all(f["type"] == "json_schema" and f["json_schema"]["strict"]
                                      and f["json_schema"]["schema"] == spec.contract.json_schema for f in formats)
    taught = teacher_records(s, task)
    assert len(taught) == 80 and all(check(r.label, spec.contract).ok for r in taught)
    assert any(json.loads(r.label)["city"] for r in taught)  # some sessions name a city
    [metrics] = run_once(s)  # curated at the seed size, trained, gated
    assert metrics.task == task and metrics.promoted
    runtime = StudentRuntime(s, store, redis_client, backend_factory=lambda _s: vllm_backend)
    escalated: list[object] = []
    outcome = run_student_chunk(runtime, make_chunk(list(generate(24, seed=65)), task=task, route="steady"),
                                lambda chunk, items: escalated.extend(items))
    labels = [r.label for r in student_records(s, task)]
    assert escalated == [] and len(labels) == 24, (len(escalated), labels[:3], outcome)
    assert all(check(label, spec.contract).ok for label in labels)  # every answer parses and validates
