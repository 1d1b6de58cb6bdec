"""The routing policy's shared state in Redis (the producer writes it, status reads it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from labelq.keyspace import RoutingField
from labelq.settings import Settings


@dataclass(frozen=True, slots=True)
class RoutingState:
    """Where a task stands in the routing policy: seeding the teacher, or steady (sampling)."""

    phase: Literal["seed", "steady"]
    seeded: int  # sessions routed to the teacher as seed so far
    seed_size: int
    sample_rate: float  # steady phase: share of traffic sampled to the teacher
    stratify_by: str | None


def routing_from_hash(settings: Settings, raw: dict[bytes, bytes]) -> RoutingState:
    """The routing state in the fields of its hash (``keyspace.routing``, read by the caller)."""
    seeded = int(raw.get(RoutingField.SEEDED.encode(), 0))
    done = bool(raw.get(RoutingField.DONE.encode())) or seeded >= settings.curation_seed_size
    return RoutingState(phase="steady" if done else "seed", seeded=seeded, seed_size=settings.curation_seed_size,
                        sample_rate=settings.routing_sample_rate, stratify_by=settings.routing_stratify_by)
