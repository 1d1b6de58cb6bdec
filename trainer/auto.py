"""Automatic curation: the trainer builds the next bucket when it is due.

When a bucket is due is decided in :mod:`labelq.curation_schedule` (teacher
workers read it to send one trigger per threshold); the trainer curates when
:func:`curate_if_due` agrees, so a lost or duplicated trigger changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from labelq import keyspace
from labelq.curation_schedule import is_due, record_curated, teacher_labels
from labelq.logging import get_logger
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.store import ObjectStore

if TYPE_CHECKING:
    from trainer.curation import Manifest

log = get_logger(__name__)


def curate_if_due(settings: Settings, store: ObjectStore, client: redis.Redis, task: str) -> Manifest | None:
    """Build the next bucket when due (one trainer at a time); its manifest, else None."""
    from trainer.curation import curate

    if not is_due(settings, client, task):
        return None
    lock = keyspace.curate_lock(settings, task)
    if not client.set(lock, "1", nx=True, ex=keyspace.CURATE_LOCK_TTL_S):
        return None
    try:
        labels = teacher_labels(settings, client, task)
        manifest = curate(store, load_spec(task, settings.specs_dir),
                          require_review=settings.curation_require_review, max_rows=settings.curation_max_rows,
                          lag_s=settings.curation_watermark_lag_s)
        record_curated(settings, client, task, labels)
        if manifest is not None:
            log.info("curated", task=task, dataset=manifest.version, counts=manifest.counts.to_dict(),
                     new=manifest.new.to_dict() if manifest.new else None, labels_read=manifest.labels_seen,
                     review=settings.curation_require_review)
        return manifest
    finally:
        client.delete(lock)


def tasks_with_teacher_labels(settings: Settings, client: redis.Redis) -> list[str]:
    from labelq.task_registry import known_tasks

    return [task for task in known_tasks(settings, client) if teacher_labels(settings, client, task) > 0]
