"""The trainer's Celery task (a trigger on the ``trainer`` queue) and the polling loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from labelq.celery_app import TRAINER_TASK
from labelq.logging import bind, get_logger
from labelq.redis_server import connect
from labelq.settings import Settings
from labelq.store import open_store
from trainer.service import ready_buckets, train_bucket

log = get_logger(__name__)


def run_once(settings: Settings) -> list[dict[str, Any]]:
    """Train every ready bucket once; return their metrics."""
    store, client = open_store(settings), connect(settings)
    done = []
    for task, version in ready_buckets(store):
        with bind(task=task, dataset=version):
            metrics = train_bucket(settings, store, client, task, version)
        if metrics is not None:
            done.append(metrics)
    return done


def run_forever(settings: Settings, on_result: Callable[[dict[str, Any]], None]) -> None:
    """Poll the store for ready buckets until interrupted."""
    while True:
        for metrics in run_once(settings):
            on_result(metrics)
        time.sleep(settings.trainer_poll_s)


def register(app: Celery) -> None:
    """A trigger on the trainer queue: ``{"task": ..., "dataset_version": ...}``."""

    @app.task(name=TRAINER_TASK, bind=True, acks_late=True)  # type: ignore[untyped-decorator]
    def train(self: Any, message: dict[str, str]) -> dict[str, Any] | None:
        settings: Settings = self.app.conf.labelq_settings
        with bind(celery_task_id=self.request.id, task=message["task"], dataset=message["dataset_version"]):
            metrics = train_bucket(settings, open_store(settings), connect(settings),
                                   message["task"], message["dataset_version"])
        return None if metrics is None else {"version": metrics["version"], "promoted": metrics["promoted"]}
