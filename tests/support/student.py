"""Helpers for student tests: adapters in the store, chunks, records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import redis

from labelq import adapter_manifest, keyspace
from labelq.engines.base import Adapter, Generation
from labelq.keyspace import AdapterFile
from labelq.registry import Registry
from labelq.schemas import LabelRecord
from labelq.settings import Settings
from labelq.store import open_store
from tests.support.helpers import jsonl_objects

TASK = "session-label"
CONSTANT_LABEL = "Buys a gift card"  # the only answer of the tiny_adapters fixture's ``constant`` adapter


def publish_adapter(settings: Settings, client: redis.Redis, adapter_dir: Path, version: int,
                    *, promote: bool = True, task: str = TASK) -> str:
    """Put an adapter in the store as the trainer does (its files once each, their manifest, its content
    hash in the registry, metrics.json last), then promote it; its content hash.

    Its ``train_config.json`` (which records the base it was trained on) goes too when it has one.
    """
    store = open_store(settings)
    names = (AdapterFile.CONFIG, AdapterFile.WEIGHTS, AdapterFile.TRAIN_CONFIG)
    files = {n: adapter_dir / n for n in names if n != AdapterFile.TRAIN_CONFIG or (adapter_dir / n).exists()}
    content_hash = adapter_manifest.publish(store, task, version, files)
    registry = Registry(settings, client, store)
    registry.record_hash(task, version, content_hash)
    store.put_bytes(keyspace.adapter_file(task, version, AdapterFile.METRICS),
                    orjson.dumps({"version": version, "content_hash": content_hash}))
    if promote:
        registry.promote(task, version)
    return content_hash


def student_records(settings: Settings, task: str = TASK) -> list[LabelRecord]:
    return [LabelRecord.decode(row) for row in jsonl_objects(settings, keyspace.labels_prefix("student", task))]


class FakeEngine:
    """A student engine that answers every prompt the same way and counts its calls; serves ``model``."""

    name = "fake"

    def __init__(self, model: str) -> None:
        self.model = model
        self.calls = 0

    def generate(self, prompts: list[str], adapter: Adapter | None, max_new_tokens: int,
                 json_schema: dict[str, Any] | None = None) -> list[Generation]:
        self.calls += 1
        return [Generation("Browses running shoes", 0.9, 3) for _ in prompts]

    def close(self) -> None:
        pass
