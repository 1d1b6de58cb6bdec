"""What ``labelq status`` reports: queue depths, dead letters, per-task totals."""

from __future__ import annotations

from typing import Any

import redis

from labelq.celery_app import queue_redis_key
from labelq.settings import QUEUES, Settings


def _int_hash(client: redis.Redis, key: str) -> dict[str, int]:
    raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in sorted(raw.items())}


def known_tasks(settings: Settings, client: redis.Redis) -> list[str]:
    prefix = settings.redis_key("stats", "")
    names = {k.decode()[len(prefix):] for k in client.scan_iter(match=prefix + "*", count=500)}
    return sorted(names)


def gather(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """One snapshot, as plain data (the CLI renders it as a table or JSON)."""
    queues = {name: int(client.llen(queue_redis_key(settings, name))) for name in QUEUES}
    dead_letter = _int_hash(client, settings.redis_key("dlq", "reasons"))
    tasks: dict[str, Any] = {}
    for task in known_tasks(settings, client):
        stats = _int_hash(client, settings.redis_key("stats", task))
        dlq = _int_hash(client, settings.redis_key("dlq", "task", task))
        tasks[task] = {
            "ingested": stats.get("ingested", 0),
            "duplicates": stats.get("duplicates", 0),
            "dead_lettered": sum(dlq.values()),
            "dead_letter": dlq,
        }
    return {
        "queues": queues,
        "dead_letter": dead_letter,
        "tasks": tasks,
        "totals": {
            "ingested": sum(t["ingested"] for t in tasks.values()),
            "duplicates": sum(t["duplicates"] for t in tasks.values()),
            "dead_lettered": sum(dead_letter.values()),
            "queued_chunks": sum(queues.values()),
        },
    }
