"""Automatic curation: the first bucket at ``seed_size`` teacher labels, then one every ``retrain_every``.

Teacher workers call :func:`notify_if_due` after each chunk (two Redis reads);
when a threshold is crossed they put one trigger on the ``trainer`` queue (a
``SET NX`` per threshold keeps it to one). The trainer curates when
:func:`curate_if_due` agrees, so a lost or duplicated trigger changes nothing:
the trainer's polling loop runs the same check.
"""

from __future__ import annotations

from typing import Any

import redis

from labelq import keyspace
from labelq.keyspace import CurationField, Stat
from labelq.logging import get_logger
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.store import ObjectStore

log = get_logger(__name__)


def _teacher_labels(settings: Settings, client: redis.Redis, task: str) -> int:
    return int(client.hget(keyspace.stats(settings, task), Stat.LABELLED_TEACHER) or 0)


def _curated_at(settings: Settings, client: redis.Redis, task: str) -> int | None:
    raw = client.hget(keyspace.curation(settings, task), CurationField.LABELS_AT)
    return None if raw is None else int(raw)


def next_threshold(settings: Settings, client: redis.Redis, task: str) -> int:
    """Teacher labels at which the next automatic bucket is due."""
    last = _curated_at(settings, client, task)
    return settings.curation_seed_size if last is None else last + settings.curation_retrain_every


def is_due(settings: Settings, client: redis.Redis, task: str) -> bool:
    return _teacher_labels(settings, client, task) >= next_threshold(settings, client, task)


def notify_if_due(settings: Settings, client: redis.Redis, app: Any, task: str) -> bool:
    """Send one trainer trigger when the task crossed its next curation threshold."""
    threshold = next_threshold(settings, client, task)
    if _teacher_labels(settings, client, task) < threshold:
        return False
    once = keyspace.curation_trigger(settings, task, threshold)
    if not client.set(once, "1", nx=True, ex=keyspace.CURATION_TRIGGER_TTL_S):
        return False
    from labelq.queue.app import TRAINER_TASK

    app.send_task(TRAINER_TASK, args=[{"task": task, "curate": True}], queue="trainer")
    log.info("trainer_triggered", task=task, teacher_labels=threshold)
    return True


def curate_if_due(settings: Settings, store: ObjectStore, client: redis.Redis, task: str) -> dict[str, Any] | None:
    """Build the next bucket when due (one trainer at a time); its manifest, else None."""
    from trainer.curation import curate

    if not is_due(settings, client, task):
        return None
    lock = keyspace.curate_lock(settings, task)
    if not client.set(lock, "1", nx=True, ex=keyspace.CURATE_LOCK_TTL_S):
        return None
    try:
        labels = _teacher_labels(settings, client, task)
        manifest = curate(store, load_spec(task, settings.specs_dir),
                          require_review=settings.curation_require_review)
        client.hset(keyspace.curation(settings, task), CurationField.LABELS_AT, labels)
        if manifest is not None:
            log.info("curated", task=task, dataset=manifest["version"], counts=manifest["counts"],
                     review=settings.curation_require_review)
        return manifest
    finally:
        client.delete(lock)


def tasks_with_teacher_labels(settings: Settings, client: redis.Redis) -> list[str]:
    from labelq.status import known_tasks

    return [task for task in known_tasks(settings, client) if _teacher_labels(settings, client, task) > 0]
