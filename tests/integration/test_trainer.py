"""Teacher labels -> curated bucket -> LoRA adapter -> gate -> registry, on the tiny base."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from labelq.registry import Registry
from labelq.settings import Settings
from labelq.store import open_store
from labelq.synth import generate
from tests.integration.teacher_helpers import make_chunk
from trainer.curation import curate
from trainer.service import ready_buckets, train_bucket
from workers.teacher.tasks import run_teacher_chunk

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("torch")


def label_with_replay(settings: Settings, client: redis.Redis, sessions: list[dict]) -> None:  # type: ignore[type-arg]
    store = open_store(settings)
    for start in range(0, len(sessions), 64):
        run_teacher_chunk(settings, store, client, make_chunk(sessions[start:start + 64]),
                          requeue=lambda c, items: pytest.fail("replay never hands work back"))


def test_bucket_trains_promotes_and_gate_refuses_a_worse_adapter(
    settings: Settings, redis_client: redis.Redis, tiny_model: Path
) -> None:
    from labelq.spec import load_spec

    settings = settings.model_copy(update={"teacher_backend": "replay", "teacher_replay_latency_s": 0.0,
                                           "student_model": str(tiny_model)})
    store = open_store(settings)
    spec = load_spec("session-label")
    label_with_replay(settings, redis_client, list(generate(300, seed=61)))
    manifest = curate(store, spec)
    assert manifest is not None and manifest["counts"]["train"] > 200
    assert ready_buckets(store) == [("session-label", "v0001")]
    first = train_bucket(settings, store, redis_client, "session-label", "v0001")
    assert first is not None and first["promoted"] and first["version"] == 1
    assert first["adapter"]["within_contract"] > first["base"]["within_contract"]
    assert first["adapter"]["mean_words"] < first["base"]["mean_words"]
    registry = Registry(settings, redis_client, store)
    assert registry.serving("session-label") == 1 and ready_buckets(store) == []
    for name in ("adapter_model.safetensors", "adapter_config.json", "train_config.json", "metrics.json",
                 "dataset.json"):
        assert store.exists(f"adapters/session-label/v1/{name}")
    # A worse bucket: every label wrong. Its adapter is evaluated on its own val set against the
    # serving adapter there, and refused.
    for key_ in list(store.list("curated/session-label/v0001/")):
        if key_.endswith(".jsonl"):
            rows = [orjson.loads(line) for line in store.get_bytes(key_).splitlines()]
            if key_.endswith("train.jsonl"):
                for row in rows:
                    row["label"] = "Buys a gift card"
            store.put_bytes(key_.replace("v0001", "v0002"), b"".join(orjson.dumps(r) + b"\n" for r in rows))
    store.put_bytes("curated/session-label/v0002/_READY", b"")
    second = train_bucket(settings, store, redis_client, "session-label", "v0002")
    assert second is not None and not second["promoted"] and "worse than the serving adapter" in second["gate"]
    assert second["serving"]["version"] == 1
    assert registry.serving("session-label") == 1 and registry.versions("session-label") == [1, 2]


def test_a_locked_bucket_is_left_to_its_trainer(settings: Settings, redis_client: redis.Redis) -> None:
    redis_client.set(settings.redis_key("lock", "train", "session-label", "v0009"), "1")
    assert train_bucket(settings, open_store(settings), redis_client, "session-label", "v0009") is None
