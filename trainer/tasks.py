"""The trainer's Celery task (a trigger on the ``trainer`` queue) and the polling loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from labelq.logging import bind, get_logger
from labelq.queue.app import TRAINER_TASK, QueueApp
from labelq.queue.task import LabelqTask, register_task
from labelq.queue.worker import check_at_worker_start
from labelq.redis_server import connect
from labelq.registry import release_parked, restore_lost_registries, sweep_parked
from labelq.settings import Settings
from labelq.store import open_store
from trainer.auto import curate_if_due, tasks_with_teacher_labels
from trainer.monitor import monitor_quality
from trainer.reports import TrainingReport
from trainer.service import ready_buckets, train_bucket

log = get_logger(__name__)


def run_once(settings: Settings) -> list[TrainingReport]:
    """Curate what is due, then train every ready bucket once; return their reports. First, the
    sweep of parked student chunks (``labelq.registry.release_parked``): nothing stays parked once
    its task can be served, whatever crashed between a promotion and its unpark; then the agreement
    monitor (``trainer.monitor``: cosines, drift alarm, automatic rollback)."""
    store, client = open_store(settings), connect(settings)
    release_parked(settings, client, store)
    monitor_quality(settings, store, client)  # before curation: a rollback makes the next bucket due now
    for task in tasks_with_teacher_labels(settings, client):
        curate_if_due(settings, store, client, task)
    done = []
    for task, version in ready_buckets(store):
        with bind(task=task, dataset=version):
            report = train_bucket(settings, store, client, task, version)
        if report is not None:
            done.append(report)
    return done


def run_forever(settings: Settings, on_result: Callable[[TrainingReport], None]) -> None:
    """Poll the store for ready buckets until interrupted."""
    while True:
        for report in run_once(settings):
            on_result(report)
        time.sleep(settings.trainer_poll_s)


def _train(job: LabelqTask, message: dict[str, Any]) -> list[dict[str, Any]]:
    settings = job.settings
    store, client = job.store, job.redis
    task = message["task"]
    if message.get("curate"):
        curate_if_due(settings, store, client, task)
    versions = [message["dataset_version"]] if "dataset_version" in message else \
        [v for t, v in ready_buckets(store) if t == task]
    results = []
    for version in versions:
        with bind(celery_task_id=job.message_id, task=task, dataset=version):
            report = train_bucket(settings, store, client, task, version)
        if report is not None:
            results.append({"version": report.version, "promoted": report.promoted})
    return results


def register(app: QueueApp) -> None:
    """A trigger on the trainer queue: ``{"task": ...}`` with ``"curate": true`` (curate if due, then
    train what is ready) or ``"dataset_version": ...`` (train that bucket)."""
    register_task(app, TRAINER_TASK, _train)
    check_at_worker_start(app, "trainer", restore_lost_registries)
    check_at_worker_start(app, "trainer", sweep_parked)
