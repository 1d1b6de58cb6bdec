"""When automatic curation is due (labelq/curation_schedule.py, trainer/auto.py): the first bucket at ``seed_size`` teacher labels,
then one every ``retrain_every``; one trainer trigger per threshold. In-process, with the replay teacher
labelling into a real redis-server (the counters and the once-per-threshold ``SET NX`` live there)."""

from __future__ import annotations

from typing import Any

import redis

from labelq import keyspace
from labelq.curation_schedule import is_due, next_threshold
from labelq.queue.publish import trigger_curation_if_due
from labelq.settings import Settings
from labelq.store import open_store
from labelq.synth import generate
from tests.support.teacher import label_with_replay
from trainer.auto import curate_if_due

TASK = "session-label"


class SentTasks:
    """Stands in for the Celery app: records what would go on the trainer queue."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, args: list[Any], queue: str) -> None:
        self.sent.append({"name": name, "args": args, "queue": queue})


def test_automatic_curation_at_seed_size_then_every_retrain_every(
        settings: Settings, redis_client: redis.Redis) -> None:
    settings = settings.model_copy(update={"curation_seed_size": 128, "curation_retrain_every": 64})
    store = open_store(settings)
    app = SentTasks()
    assert next_threshold(settings, redis_client, TASK) == 128 and not is_due(settings, redis_client, TASK)
    label_with_replay(settings, redis_client, list(generate(127, seed=65)))
    assert not is_due(settings, redis_client, TASK)  # one label short
    assert not trigger_curation_if_due(settings, redis_client, app, TASK)  # type: ignore[arg-type]
    assert curate_if_due(settings, store, redis_client, TASK) is None
    label_with_replay(settings, redis_client, list(generate(1, seed=66)))
    assert is_due(settings, redis_client, TASK)
    assert trigger_curation_if_due(settings, redis_client, app, TASK)  # type: ignore[arg-type]
    assert not trigger_curation_if_due(settings, redis_client, app, TASK)  # type: ignore[arg-type]  # one trigger per threshold
    assert app.sent == [{"name": "labelq.trainer.train_bucket", "args": [{"task": TASK, "curate": True}],
                         "queue": "trainer"}]
    first = curate_if_due(settings, store, redis_client, TASK)
    assert first is not None and first.version == "v0001" and first.counts.train + first.counts.val == 128
    # The next threshold counts from the labels the bucket was curated at.
    assert next_threshold(settings, redis_client, TASK) == 128 + 64 and not is_due(settings, redis_client, TASK)
    assert curate_if_due(settings, store, redis_client, TASK) is None  # not due again yet
    label_with_replay(settings, redis_client, list(generate(64, seed=67)))
    assert trigger_curation_if_due(settings, redis_client, app, TASK)  # type: ignore[arg-type]
    assert len(app.sent) == 2
    second = curate_if_due(settings, store, redis_client, TASK)
    assert second is not None and second.version == "v0002" and second.counts.train + second.counts.val == 192
    assert next_threshold(settings, redis_client, TASK) == 256


def test_a_second_trainer_does_not_curate_while_one_holds_the_lock(
        settings: Settings, redis_client: redis.Redis) -> None:
    settings = settings.model_copy(update={"curation_seed_size": 16})
    store = open_store(settings)
    label_with_replay(settings, redis_client, list(generate(16, seed=68)))
    lock = keyspace.curate_lock(settings, TASK)
    redis_client.set(lock, "other-trainer")
    assert is_due(settings, redis_client, TASK)
    assert curate_if_due(settings, store, redis_client, TASK) is None and list(store.list(keyspace.curated_prefix())) == []
    redis_client.delete(lock)
    manifest = curate_if_due(settings, store, redis_client, TASK)
    assert manifest is not None and manifest.version == "v0001" and not redis_client.exists(lock)
