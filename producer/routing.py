"""Where each session goes: the per-task routing policy.

* **seed phase**: the first ``seed_size`` sessions of a task go to the teacher
  (``route=seed``); with ``routing_stratify_by`` (a field path such as
  ``site`` or ``user.device``) no value takes more than its fair share of the
  seed set, so rare values are labelled too. The phase's state is in Redis, so
  every producer process shares it (``labelq/lua/seed_route.lua``); it costs one
  round trip per session while it lasts and none after.
* **steady state**: a ``routing_sample_rate`` share goes to the teacher
  (``route=sample``: drift monitoring and fresh training data), chosen by a
  keyed hash of the content hash (``labelq.sampling``: the same session always
  routes the same way, and a submitter cannot steer one into the sample); the
  rest go to students (``route=steady``). Students escalate what they doubt
  (``route=escalation``, see workers/student/labeler.py). With
  ``shadow_enabled`` and an adapter serving the task (:meth:`PolicyRouter.shadows`,
  read at most every ``PAUSE_CHECK_S``), the ingestor also sends the sample to
  the student queue as shadow chunks (``route=shadow``): labelled for
  student-teacher agreement only (``labelq.agreement``), never as labels.
* **teacher paused** (budget spent, key refused, provider out: the pause flag
  the teacher workers set): the sample goes to students instead
  (``route=sample_teacher_paused``, a flag on their label records), so a paused
  teacher's queue never fills and never holds ingestion back. The flag is read
  at most every ``PAUSE_CHECK_S`` per task. Seed sessions still go to the
  teacher: without teacher labels there is no student.

``--queue`` forces every session to one queue instead (``FixedRouter``).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import orjson
import redis

from labelq import keyspace, lua
from labelq.errors import ConfigError
from labelq.sampling import sample_fraction, sample_secret
from labelq.settings import QUEUES, Settings
from labelq.store import ObjectStore, open_store
from producer.validate import Accepted

PAUSE_CHECK_S = 5.0  # how stale a producer's view of the teacher's pause may be


class Router(Protocol):
    def route(self, task: str, session: Accepted) -> tuple[str, str]:
        """Return ``(queue, route_name)`` for one session."""
        ...

    def shadows(self, task: str) -> bool:
        """Whether ``route=sample`` sessions of ``task`` also go to the student queue as shadow chunks."""
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

    def shadows(self, task: str) -> bool:
        return False


def _field(raw: bytes, path: str) -> str:
    value: Any = orjson.loads(raw)
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)[:200]


class PolicyRouter:
    """Seed phase, then sample-to-teacher and the rest to students (see the module doc)."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None,
                 store: ObjectStore | None = None) -> None:
        self._settings = settings
        self._client = client
        self._store = store
        self._secret: bytes | None = None
        self._done: set[str] = set()
        self._paused: dict[str, tuple[float, bool]] = {}  # task -> (checked at, teacher paused)
        self._served: dict[str, tuple[float, bool]] = {}  # task -> (checked at, an adapter serves it)

    def __getstate__(self) -> dict[str, Any]:  # sent to ingest subprocesses: they connect themselves
        return {"_settings": self._settings, "_client": None, "_store": None, "_secret": self._secret,
                "_done": set(self._done), "_paused": {}, "_served": {}}

    def _teacher_paused(self, task: str) -> bool:
        now = time.monotonic()
        checked_at, paused = self._paused.get(task, (-PAUSE_CHECK_S, False))
        if now - checked_at >= PAUSE_CHECK_S:
            paused = bool(self._redis().exists(keyspace.teacher_paused(self._settings, task)))
            self._paused[task] = (now, paused)
        return paused

    def shadows(self, task: str) -> bool:
        """Shadow labelling is on and an adapter serves ``task`` (without one there is nothing to compare)."""
        if not self._settings.shadow_enabled:
            return False
        now = time.monotonic()
        checked_at, served = self._served.get(task, (-PAUSE_CHECK_S, False))
        if now - checked_at >= PAUSE_CHECK_S:
            served = bool(self._redis().exists(keyspace.adapter_pinned(self._settings, task),
                                               keyspace.adapter_current(self._settings, task)))
            self._served[task] = (now, served)
        return served

    def _redis(self) -> redis.Redis:
        if self._client is None:
            from labelq.redis_server import connect

            self._client = connect(self._settings)
        return self._client

    def _sample_secret(self) -> bytes:
        if self._secret is None:
            self._store = self._store or open_store(self._settings)
            self._secret = sample_secret(self._settings, self._redis(), self._store)
        return self._secret

    def route(self, task: str, session: Accepted) -> tuple[str, str]:
        settings = self._settings
        if task not in self._done:
            stratum = _field(session.raw, settings.routing_stratify_by) if settings.routing_stratify_by else ""
            client = self._redis()
            keys = [keyspace.routing(settings, task), keyspace.routing_strata(settings, task)]
            verdict = lua.script(client, "seed_route")(keys=keys, args=[settings.curation_seed_size, stratum])
            if verdict == 1:
                return "teacher", "seed"
            if verdict == 0:
                self._done.add(task)
        rate = settings.routing_sample_rate
        if rate > 0 and sample_fraction(self._sample_secret(), session.content_hash) < rate:
            if self._teacher_paused(task):
                return "student", "sample_teacher_paused"
            return "teacher", "sample"
        return "student", "steady"


def default_router(settings: Settings) -> Router:
    """The routing in force when no queue is forced: the policy."""
    return PolicyRouter(settings)
