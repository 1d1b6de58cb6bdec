"""The Celery app factory: docs/architecture.md's delivery guarantees in one place.

At-least-once with idempotent output: late acks, reject on worker lost,
prefetch 1, one shared visibility timeout, JSON only. Tasks are routed to
queues by name (``labelq.<queue>.*``), so the producer publishes by task
name and never imports worker code. The worker process's app is built by
:mod:`labelq.queue.worker`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import orjson
from celery import Celery
from kombu.entity import Queue
from kombu.serialization import registry
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from labelq import keyspace
from labelq.queue.transport import RESERVE_KEY, RESERVE_LOW_WATER, RESERVE_SHARE, Transport
from labelq.redis_server import resolve_redis_url
from labelq.settings import QUEUES, Settings

TEACHER_TASK = "labelq.teacher.label_chunk"
STUDENT_TASK = "labelq.student.label_chunk"
TRAINER_TASK = "labelq.trainer.train_bucket"
TASK_FOR_QUEUE: dict[str, str] = {
    "teacher": TEACHER_TASK,
    "student": STUDENT_TASK,
    "trainer": TRAINER_TASK,
}
# The app type stage packages name (in ``register(app)``) without importing Celery.
QueueApp: TypeAlias = Celery


def _orjson_dumps(obj: Any) -> str:
    try:
        return orjson.dumps(obj).decode()
    except TypeError:  # a type orjson does not know (never in labelq's own messages)
        return str(kombu_json.dumps(obj))


def use_orjson_for_json() -> None:
    """Serve kombu's JSON with orjson: the same bytes on the wire, ~10x faster.

    Two places: the ``json`` message serializer, and the Redis transport's
    envelope encoder (it JSON-encodes every message, base64 body included, with
    the stdlib; that was a third of the producer's time). Messages stay
    ``application/json``, readable by any Celery consumer.
    """
    registry.register("json", _orjson_dumps, orjson.loads, content_type="application/json",
                      content_encoding="utf-8")
    kombu_redis.dumps = _orjson_dumps  # type: ignore[attr-defined,assignment]


def celery_config(settings: Settings, broker_url: str) -> dict[str, Any]:
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        "global_keyprefix": settings.redis_key_prefix,
        # A dead worker's message comes back once it is older than the visibility timeout, at
        # the next sweep. kombu sweeps every 10 s but scans only every 10th sweep (~100 s);
        # the scan reads an index, so labelq scans on every sweep.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 3)),
        "unacked_restore_throttle": 1,
        # labelq.queue.transport: where the memory reserve is, its size, when to hold it.
        RESERVE_KEY: keyspace.memory_reserve(settings),
        RESERVE_SHARE: settings.redis_memory_reserve_share,
        RESERVE_LOW_WATER: settings.redis_memory_low_water,
    }
    return {
        "broker_url": broker_url,
        # kombu's Redis transport, made to start and keep consuming at Redis's memory ceiling.
        "broker_transport": f"{Transport.__module__}:{Transport.__name__}",
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # reconnect forever after a Redis restart
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_queues": [Queue(name) for name in QUEUES],
        "task_default_queue": "teacher",
        "task_routes": {f"labelq.{name}.*": {"queue": name} for name in QUEUES},
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "enable_utc": True,
    }


def create_app(settings: Settings, *, broker_url: str | None = None, name: str = "labelq") -> Celery:
    """A configured Celery app (no tasks registered: stage packages register theirs)."""
    use_orjson_for_json()
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings, broker_url or resolve_redis_url(settings)))
    app.conf.labelq_settings = settings
    return app
