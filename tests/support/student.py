"""Helpers for student tests: adapters in the store, chunks, records."""

from __future__ import annotations

from pathlib import Path

import orjson
import redis

from labelq import keyspace
from labelq.keyspace import AdapterFile
from labelq.registry import Registry
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
    for name in (AdapterFile.CONFIG, AdapterFile.WEIGHTS, AdapterFile.TRAIN_CONFIG):
        if name != AdapterFile.TRAIN_CONFIG or (adapter_dir / name).exists():
            store.put_file(keyspace.adapter_file(TASK, version, name), adapter_dir / name)
    store.put_bytes(keyspace.adapter_file(TASK, version, AdapterFile.METRICS), orjson.dumps({"version": version}))
    if promote:
        Registry(settings, client, store).promote(TASK, version)


def student_records(settings: Settings) -> list[LabelRecord]:
    return [LabelRecord.decode(row) for row in jsonl_objects(settings, keyspace.labels_prefix("student", TASK))]
