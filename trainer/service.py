"""The trainer service: curated bucket -> LoRA adapter -> evaluation, calibration -> promotion gate.

A bucket is ready when it has ``_READY`` and no ``_TRAINED`` marker. A Redis
lock per bucket keeps two trainers apart. The adapter version is claimed
before training (``Registry.claim_version``: no other trainer ever writes
it, whatever happens to the lock or to Redis); the adapter is built in a temp
dir and its files are written once each, then their manifest, then
``metrics.json`` (which carries the content hash, also kept in the registry).
Only versions with a ``metrics.json`` exist, so a crash mid-training or
mid-upload leaves no half adapter (only its claim: that number is not used
again), and the bucket (still without ``_TRAINED``) is trained again.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis

from labelq import adapter_manifest, keyspace, lua
from labelq.engines.base import Generation
from labelq.errors import IntegrityError
from labelq.keyspace import AdapterFile, BucketFile
from labelq.logging import get_logger
from labelq.models import resolve_base_model, same_base, settings_base_hash
from labelq.prompts import student_prompt
from labelq.registry import Registry, recorded_base_hash
from labelq.schemas import utc_now_iso
from labelq.settings import Settings
from labelq.spec import TaskSpec, load_spec
from labelq.store import ObjectStore
from trainer.calibration import Calibration, calibrate
from trainer.curation import read_training_set
from trainer.evaluate import EvalScores, answers_right, score
from trainer.gate import Floors, GoldenOutcome, gate
from trainer.golden import GoldenCase, golden_path, judge_all, load_golden
from trainer.reports import ServingEval, TrainingReport

log = get_logger(__name__)
ADAPTER_FILES = (AdapterFile.WEIGHTS, AdapterFile.CONFIG, AdapterFile.TRAIN_CONFIG)  # what train_lora writes
SERVED_FILES = ADAPTER_FILES[:2]  # what an engine loads


def ready_buckets(store: ObjectStore) -> list[tuple[str, str]]:
    """``(task, version)`` of curated buckets that are complete and not trained yet, oldest first."""
    ready: set[tuple[str, str]] = set()
    trained: set[tuple[str, str]] = set()
    for k in store.list(keyspace.curated_prefix()):
        parsed = keyspace.parse_bucket_file(k)
        if parsed is not None and parsed[2] in (BucketFile.READY, BucketFile.TRAINED):
            task, version, name = parsed
            (ready if name == BucketFile.READY else trained).add((task, version))
    return sorted(ready - trained, key=lambda tv: (tv[1], tv[0]))


def _answers(base_model: str, adapter_dir: str | None, prompts: list[str], max_new_tokens: int) -> list[Generation]:
    from labelq.engines.transformers_engine import generate_scored, load_for_generation

    model, tokenizer = load_for_generation(base_model, adapter_dir)
    return generate_scored(model, tokenizer, prompts, max_new_tokens=max_new_tokens)


def _evaluate(base_model: str, adapter_dir: str | None, prompts: list[str], refs: list[str],
              contract: Any, max_new_tokens: int) -> EvalScores:
    return score([g.text for g in _answers(base_model, adapter_dir, prompts, max_new_tokens)], refs, contract)


def _evaluate_new(settings: Settings, spec: TaskSpec, base_model: str, adapter_dir: str, val_prompts: list[str],
                  val_refs: list[str], golden_cases: list[GoldenCase] | None,
                  ) -> tuple[EvalScores, GoldenOutcome | None, Calibration]:
    """The new adapter on the val split and the golden cases (one generation pass), and the confidence
    threshold its val answers calibrate for the students."""
    golden_prompts = [student_prompt(spec, settings, c.session) for c in golden_cases or []]
    answers = _answers(base_model, adapter_dir, val_prompts + golden_prompts, spec.student.max_new_tokens)
    val, rest = answers[:len(val_prompts)], answers[len(val_prompts):]
    texts = [g.text for g in val]
    golden = None if golden_cases is None else judge_all(golden_cases, [g.text for g in rest], spec.contract)
    calibration = calibrate([g.confidence for g in val], answers_right(texts, val_refs, spec.contract),
                            target_precision=settings.student_target_precision,
                            fallback=settings.student_confidence_threshold)
    return score(texts, val_refs, spec.contract), golden, calibration


def train_bucket(settings: Settings, store: ObjectStore, client: redis.Redis, task: str,
                 dataset_version: str) -> TrainingReport | None:
    """Train, evaluate and maybe promote one bucket. None when another trainer holds it.

    The lock lives ``trainer_lock_s`` and a heartbeat renews it while this
    trainer works, so a killed trainer's bucket is free again within that time.
    """
    lock = keyspace.train_lock(settings, task, dataset_version)
    token = uuid.uuid4().hex
    if not client.set(lock, token, nx=True, ex=settings.trainer_lock_s):
        log.info("bucket_locked", task=task, dataset=dataset_version)
        return None
    stop = threading.Event()
    renew = lua.script(client, "lock_renew")

    def heartbeat() -> None:
        while not stop.wait(settings.trainer_lock_s / 3):
            if renew(keys=[lock], args=[token, settings.trainer_lock_s]) == 0:
                log.error("lock_lost", task=task, dataset=dataset_version)
                return

    beat = threading.Thread(target=heartbeat, name="labelq-train-lock", daemon=True)
    beat.start()
    try:
        return _train_locked(settings, store, client, task, dataset_version)
    finally:
        stop.set()
        beat.join()
        lua.script(client, "lock_release")(keys=[lock], args=[token])


def serving_on_other_base(store: ObjectStore, task: str, serving: int | None, base_hash: str) -> str | None:
    """The base hash the serving adapter recorded when it is not ``base_hash`` (else None): such an
    adapter is not evaluated against the new one (it may not even load on this base)."""
    if serving is None:
        return None
    recorded = recorded_base_hash(store, task, serving)
    if recorded is None or same_base(recorded, base_hash):
        return None
    log.warning("serving_adapter_on_other_base", task=task, serving=serving, serving_base=recorded,
                base_hash=base_hash)
    return recorded


def _log_progress(step: int, total: int, loss: float) -> None:
    """About ten progress lines per training run."""
    if step == total or step % max(1, total // 10) == 0:
        log.info("training_progress", step=step, steps=total, loss=round(loss, 4))


def _train_locked(settings: Settings, store: ObjectStore, client: redis.Redis, task: str,
                  dataset_version: str) -> TrainingReport:
    from trainer.lora import train_lora, training_config

    started = time.monotonic()
    base_model = resolve_base_model(settings)  # ConfigError (never a build) when `tiny` is not built
    base_hash = settings_base_hash(settings, base_model)
    spec = load_spec(task, settings.specs_dir)
    golden_file = golden_path(task, settings.specs_dir)
    golden_cases = load_golden(golden_file)  # a malformed file stops here, before a version is claimed
    bucket = keyspace.bucket(task, dataset_version)
    train, val = read_training_set(store, task, dataset_version)  # bounded by the bucket's selection
    registry = Registry(settings, client, store)
    registry.ensure(task)  # a Redis that lost the pointer must not let this version skip the gate
    serving = registry.serving(task)
    version = registry.claim_version(task, {"dataset_version": dataset_version, "host": socket.gethostname(),
                                            "pid": os.getpid()})
    val_prompts = [student_prompt(spec, settings, r["payload"]) for r in val]
    val_refs = [r["label"] for r in val]
    max_new = spec.student.max_new_tokens
    with tempfile.TemporaryDirectory(prefix="labelq-train-") as tmp:
        new_dir = Path(tmp) / "adapter"
        stats = train_lora(base_model, [(student_prompt(spec, settings, r["payload"]), r["label"]) for r in train],
                           new_dir, training_config(settings, base_model), on_step=_log_progress,
                           base_hash=base_hash)
        base_scores = _evaluate(base_model, None, val_prompts, val_refs, spec.contract, max_new)
        adapter_scores, golden, calibration = _evaluate_new(settings, spec, base_model, str(new_dir), val_prompts,
                                                            val_refs, golden_cases)
        serving_eval = None
        other_base = serving_on_other_base(store, task, serving, base_hash)
        if serving is not None and other_base is None:
            serving_dir = Path(tmp) / "serving"
            adapter_manifest.fetch(store, task, serving, SERVED_FILES, serving_dir, registry.content_hash(task, serving))
            serving_eval = ServingEval(serving, _evaluate(base_model, str(serving_dir), val_prompts, val_refs,
                                                          spec.contract, max_new))
        decision = gate(
            adapter_scores, serving_eval.scores if serving_eval else None,
            floors=Floors(settings.promote_floor_exact, settings.promote_floor_cosine,
                          settings.promote_floor_within_contract),
            margin_exact=settings.promote_margin_exact, margin_cosine=settings.promote_margin_cosine,
            golden=golden, golden_min_share=settings.promote_golden_min_share,
            golden_missing=f"no golden set ({golden_file.name} not beside the spec)",
            # not comparable when on another base, and students on this base refuse that one anyway
            no_serving="no adapter serves yet" if other_base is None
            else f"the serving adapter v{serving} was trained on another base ({other_base})",
            serving_version=serving)
        promote, why = decision.promote, decision.why
        (new_dir / AdapterFile.DATASET).write_bytes(orjson.dumps(
            {"task": task, "dataset_version": dataset_version, "bucket": bucket}))
        content_hash = adapter_manifest.publish(
            store, task, version, {name: new_dir / name for name in (*ADAPTER_FILES, AdapterFile.DATASET)})
    report = TrainingReport(
        task=task, version=version, dataset_version=dataset_version, prompt_version=spec.prompt_version,
        base_model=base_model, base_hash=base_hash, train=stats, base=base_scores, adapter=adapter_scores,
        serving=serving_eval, promoted=promote, gate=why, created_at=utc_now_iso(),
        seconds=round(time.monotonic() - started, 1), content_hash=content_hash, checks=decision.checks,
        calibration=calibration)
    registry.record_hash(task, version, content_hash)  # before metrics.json makes the version visible
    metrics = keyspace.adapter_file(task, version, AdapterFile.METRICS)
    if not store.put_if_absent(metrics, orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2)):
        raise IntegrityError(f"{metrics} already holds another report: adapter v{version} was written twice")
    if promote:
        registry.promote(task, version)
    store.put_bytes(keyspace.bucket_file(task, dataset_version, BucketFile.TRAINED),
                    orjson.dumps({"adapter_version": version, "promoted": promote}))
    log.info("bucket_trained", task=task, dataset=dataset_version, adapter=version, promoted=promote, gate=why,
             confidence_threshold=calibration.threshold, calibrated=calibration.calibrated)
    return report
