"""When the next curated bucket is due: at ``seed_size`` teacher labels, then every ``retrain_every``.

Teacher workers ask after each chunk (two Redis reads) and, when a threshold
is crossed, claim it (a ``SET NX`` per threshold keeps it to one trainer
trigger; :func:`labelq.queue.publish.trigger_curation_if_due`). The trainer
curates when :func:`is_due` agrees, so a lost or duplicated trigger changes
nothing: the trainer's polling loop runs the same check. :func:`force_next`
makes the next bucket due at once, whatever the count (the agreement monitor
asks for it after a rollback: fresh teacher labels should train a better
adapter soon); building that bucket clears it.
"""

from __future__ import annotations

import redis

from labelq import keyspace
from labelq.keyspace import CurationField, Stat
from labelq.settings import Settings


def teacher_labels(settings: Settings, client: redis.Redis, task: str) -> int:
    return int(client.hget(keyspace.stats(settings, task), Stat.LABELLED_TEACHER) or 0)


def _curated_at(settings: Settings, client: redis.Redis, task: str) -> int | None:
    raw = client.hget(keyspace.curation(settings, task), CurationField.LABELS_AT)
    return None if raw is None else int(raw)


def record_curated(settings: Settings, client: redis.Redis, task: str, labels: int) -> None:
    """Curation ran at ``labels`` teacher labels: the next bucket is due ``retrain_every`` later."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keyspace.curation(settings, task), CurationField.LABELS_AT, labels)
        pipe.hdel(keyspace.curation(settings, task), CurationField.FORCED)
        pipe.execute()


def force_next(settings: Settings, client: redis.Redis, task: str, why: str) -> None:
    """Make ``task``'s next bucket due now (the trainer's next poll builds it)."""
    client.hset(keyspace.curation(settings, task), CurationField.FORCED, why)


def forced(settings: Settings, client: redis.Redis, task: str) -> bool:
    return bool(client.hexists(keyspace.curation(settings, task), CurationField.FORCED))


def next_threshold(settings: Settings, client: redis.Redis, task: str) -> int:
    """Teacher labels at which the next automatic bucket is due."""
    last = _curated_at(settings, client, task)
    return settings.curation_seed_size if last is None else last + settings.curation_retrain_every


def is_due(settings: Settings, client: redis.Redis, task: str) -> bool:
    return (teacher_labels(settings, client, task) >= next_threshold(settings, client, task)
            or forced(settings, client, task))


def claim_trigger(settings: Settings, client: redis.Redis, task: str) -> int | None:
    """The threshold just crossed, when this caller is the first to claim it; else None."""
    threshold = next_threshold(settings, client, task)
    if teacher_labels(settings, client, task) < threshold:
        return None
    once = keyspace.curation_trigger(settings, task, threshold)
    if not client.set(once, "1", nx=True, ex=keyspace.CURATION_TRIGGER_TTL_S):
        return None
    return threshold
