"""Helpers for student tests: adapters in the store, chunks, records."""

from __future__ import annotations

from pathlib import Path

import orjson
import redis

from labelq.registry import Registry, adapter_prefix
from labelq.schemas import LabelRecord
from labelq.settings import Settings
from labelq.store import open_store
from tests.support.helpers import jsonl_objects

TASK = "session-label"
CONSTANT_LABEL = "Buys a gift card"  # the only answer of the tiny_adapters fixture's ``constant`` adapter


def publish_adapter(settings: Settings, client: redis.Redis, adapter_dir: Path, version: int,
                    *, promote: bool = True) -> None:
    """Put an adapter in the store as the trainer would (metrics.json last), then promote it.

    Its ``train_config.json`` (which records the base it was trained on) goes too when it has one.
    """
    store = open_store(settings)
    for name in ("adapter_config.json", "adapter_model.safetensors", "train_config.json"):
        if name != "train_config.json" or (adapter_dir / name).exists():
            store.put_file(f"{adapter_prefix(TASK, version)}/{name}", adapter_dir / name)
    store.put_bytes(f"{adapter_prefix(TASK, version)}/metrics.json", orjson.dumps({"version": version}))
    if promote:
        Registry(settings, client, store).promote(TASK, version)


def student_records(settings: Settings) -> list[LabelRecord]:
    return [LabelRecord.decode(row) for row in jsonl_objects(settings, f"labels/student/{TASK}/")]
