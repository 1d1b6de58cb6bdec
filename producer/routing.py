"""Where each session goes. The seam for the per-task routing policy.

Today every session of a task goes to one queue (``teacher`` by default, or
the one ``--queue`` forces). A policy that sends a seed set and a sample to
the teacher and the rest to students implements the same ``Router`` protocol.
"""

from __future__ import annotations

from typing import Protocol

from labelq.errors import ConfigError
from labelq.settings import QUEUES
from producer.validate import Accepted


class Router(Protocol):
    def route(self, task: str, session: Accepted) -> tuple[str, str]:
        """Return ``(queue, route_name)`` for one session."""
        ...


class FixedRouter:
    """Every session to one queue."""

    def __init__(self, queue: str = "teacher", route_name: str = "forced") -> None:
        if queue not in QUEUES or queue == "trainer":
            raise ConfigError(f"sessions can go to the teacher or student queue, not {queue!r}")
        self.queue = queue
        self.route_name = route_name

    def route(self, task: str, session: Accepted) -> tuple[str, str]:
        return self.queue, self.route_name


def default_router() -> Router:
    """The routing in force when none is forced: the seed phase, everything to the teacher."""
    return FixedRouter("teacher", "seed")
