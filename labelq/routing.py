"""The routing policy's shared state in Redis (the producer writes it, status reads it)."""

from __future__ import annotations

from typing import Any

import redis

from labelq import keyspace
from labelq.keyspace import RoutingField
from labelq.settings import Settings


def routing_state(settings: Settings, client: redis.Redis, task: str) -> dict[str, Any]:
    """Where a task stands in the routing policy."""
    raw: dict[bytes, bytes] = client.hgetall(keyspace.routing(settings, task))  # type: ignore[assignment]
    seeded = int(raw.get(RoutingField.SEEDED.encode(), 0))
    done = bool(raw.get(RoutingField.DONE.encode())) or seeded >= settings.curation_seed_size
    return {"phase": "steady" if done else "seed", "seeded": seeded, "seed_size": settings.curation_seed_size,
            "sample_rate": settings.routing_sample_rate, "stratify_by": settings.routing_stratify_by}
