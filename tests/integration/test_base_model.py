"""A student serves an adapter only on the base it was trained on (real Redis and store, a fake engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from labelq import keyspace
from labelq.keyspace import AdapterFile
from labelq.models import write_manifest
from labelq.queue.task import Paused
from labelq.schemas import ChunkMessage, SessionItem
from labelq.settings import Settings
from labelq.store import open_store
from labelq.synth import generate
from tests.support.helpers import dead_letters
from tests.support.student import FakeEngine, publish_adapter, student_records
from tests.support.teacher import make_chunk
from workers.student.labeler import StudentRuntime, run_student_chunk

pytestmark = pytest.mark.integration


def built_model(folder: Path, weights: bytes) -> tuple[Path, str]:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder, str(write_manifest(folder, kind="test")["base_hash"])


def adapter_files(folder: Path, base_hash: str | None) -> Path:
    folder.mkdir(parents=True)
    (folder / AdapterFile.CONFIG).write_text('{"r": 8}')
    (folder / AdapterFile.WEIGHTS).write_bytes(b"\0" * 64)
    if base_hash is not None:
        (folder / AdapterFile.TRAIN_CONFIG).write_text(json.dumps({"base_model": "x", "base_hash": base_hash}))
    return folder


def no_escalation(chunk: ChunkMessage, items: list[SessionItem]) -> None:
    pytest.fail("nothing should be escalated")


def runtime(settings: Settings, client: redis.Redis, engine: FakeEngine) -> StudentRuntime:
    return StudentRuntime(settings, open_store(settings), client, backend_factory=lambda s: engine)


def test_adapter_trained_on_another_base_is_refused_and_the_chunk_waits(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    served, served_hash = built_model(tmp_path / "served", b"\1" * 32)
    _, other_hash = built_model(tmp_path / "other", b"\2" * 32)
    publish_adapter(settings, redis_client, adapter_files(tmp_path / "adapter", other_hash), 1)
    engine = FakeEngine(str(served))
    with pytest.raises(Paused) as paused:
        run_student_chunk(runtime(settings, redis_client, engine), make_chunk(list(generate(4, seed=3))),
                          no_escalation)
    assert other_hash in paused.value.reason and served_hash in paused.value.reason
    assert "LABELQ_STUDENT_MODEL" in paused.value.reason and "v1" in paused.value.reason
    assert paused.value.wait_s == settings.student_wait_s
    assert engine.calls == 0 and student_records(settings) == [] and dead_letters(settings, "student") == []


def test_adapter_on_its_own_base_is_served(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    served, served_hash = built_model(tmp_path / "served", b"\1" * 32)
    publish_adapter(settings, redis_client, adapter_files(tmp_path / "adapter", served_hash), 1)
    result = run_student_chunk(runtime(settings, redis_client, FakeEngine(str(served))),
                               make_chunk(list(generate(4, seed=3))), no_escalation)
    assert result.labelled == 4 and result.student is not None and result.student.adapter_version == 1


def test_adapter_without_a_recorded_base_is_served_with_one_warning(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    """Adapters trained before bases were recorded: served unchecked, one warning per version."""
    served, _ = built_model(tmp_path / "served", b"\1" * 32)
    publish_adapter(settings, redis_client, adapter_files(tmp_path / "adapter", None), 1)
    rt = runtime(settings, redis_client, FakeEngine(str(served)))
    with capture_logs() as logs:
        for seed in (3, 4):
            run_student_chunk(rt, make_chunk(list(generate(4, seed=seed))), no_escalation)
    assert [e["event"] for e in logs].count("adapter_base_unknown") == 1
    assert len(student_records(settings)) == 8


def test_a_remote_engine_on_a_path_not_here_serves_unchecked_with_a_warning(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    """An `openai` engine's base path lives on its server: the recorded base cannot be compared here."""
    _, other_hash = built_model(tmp_path / "other", b"\2" * 32)
    publish_adapter(settings, redis_client, adapter_files(tmp_path / "adapter", other_hash), 1)
    with capture_logs() as logs:
        result = run_student_chunk(runtime(settings, redis_client, FakeEngine("/on/the/server/model")),
                                   make_chunk(list(generate(4, seed=3))), no_escalation)
    assert result.labelled == 4 and "base_unverifiable" in [e["event"] for e in logs]


def test_a_tiny_base_not_built_makes_chunks_wait_and_builds_nothing(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"student_model": "tiny", "student_backend": "transformers"})
    publish_adapter(settings, redis_client, adapter_files(tmp_path / "adapter", None), 1)
    rt = StudentRuntime(settings, open_store(settings), redis_client)  # the real make_backend
    with pytest.raises(Paused, match="run `labelq model tiny`"):
        run_student_chunk(rt, make_chunk(list(generate(2, seed=3))), no_escalation)
    assert not (settings.state_dir / "models").exists()
    assert student_records(settings) == [] and dead_letters(settings, "student") == []


def test_trainer_does_not_compare_with_a_serving_adapter_on_another_base(settings: Settings, tmp_path: Path) -> None:
    from trainer.service import serving_on_other_base

    _, here = built_model(tmp_path / "here", b"\1" * 32)
    _, there = built_model(tmp_path / "there", b"\2" * 32)
    store = open_store(settings)
    for version, recorded in ((1, there), (2, here)):
        store.put_bytes(keyspace.adapter_file("session-label", version, AdapterFile.TRAIN_CONFIG),
                        json.dumps({"base_hash": recorded}).encode())
    assert serving_on_other_base(store, "session-label", 1, here) == there
    assert serving_on_other_base(store, "session-label", 2, here) is None
    assert serving_on_other_base(store, "session-label", 3, here) is None  # trained before bases were recorded
    assert serving_on_other_base(store, "session-label", None, here) is None
