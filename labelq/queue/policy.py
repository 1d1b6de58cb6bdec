"""The one error policy of every labelq worker: poison, outage or configuration.

Every exception a chunk task meets is one of three kinds, decided here and
nowhere else (on the hierarchy of ``labelq/errors.py``):

* **outage**: a dependency is down (Redis, the object store, the provider, an
  engine that will not start). The chunk waits and goes back to its queue
  with backoff; it is never counted toward ``max_attempts``, never bisected,
  never dead-lettered. The stage records what it waits on and since when
  (``labelq status``, the ``labelq_waiting_since_seconds`` metric).
* **configuration**: a setting or spec is wrong (``ConfigError``). Nothing can
  succeed until an operator acts: the chunk waits like an outage, and the
  message names the setting to fix. Nothing is dead-lettered for it.
* **poison**: anything else (a bug, a crash, a session the code cannot take).
  It counts as a failed delivery; after ``max_attempts`` the chunk is halved
  until the failing session is alone and dead-lettered.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import redis

from labelq import keyspace
from labelq.errors import ConfigError, EngineDead, RateLimited, RetryableError, ServiceUnavailable
from labelq.settings import Settings
from labelq.snapshot import Waiting

CHUNK_STAGES = ("teacher", "student")  # the stages whose workers take chunks
WAITING_TTL_S = 300  # a stage whose workers all died stops claiming to wait after this


class Failure(enum.StrEnum):
    POISON = "poison"
    OUTAGE = "outage"
    CONFIG = "configuration"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Failure
    on: str  # what the work waits on: redis, store, provider, engine, configuration; "" for poison


def _dependency(exc: BaseException) -> str:
    if isinstance(exc, redis.RedisError):
        return "redis"
    if isinstance(exc, EngineDead):
        return "engine"
    if isinstance(exc, RateLimited):
        return "provider"
    if isinstance(exc, ServiceUnavailable):
        return exc.dependency
    return "store"  # an OSError: the local store's disk or permissions


def classify(exc: BaseException) -> Verdict:
    """What ``exc`` means for the chunk it interrupted.

    An exception group (an ``asyncio.TaskGroup`` wraps its first failure in one) is what its worst
    member is: configuration before outage before poison.
    """
    if isinstance(exc, BaseExceptionGroup):
        verdicts = [classify(e) for e in exc.exceptions]
        for kind in (Failure.CONFIG, Failure.OUTAGE):
            found = next((v for v in verdicts if v.kind is kind), None)
            if found is not None:
                return found
        return Verdict(Failure.POISON, "")
    if isinstance(exc, ConfigError):
        return Verdict(Failure.CONFIG, "configuration")
    if isinstance(exc, RetryableError | redis.RedisError | OSError):
        return Verdict(Failure.OUTAGE, _dependency(exc))
    if type(exc).__module__.startswith(("kombu", "amqp")) and "Operational" in type(exc).__name__:
        return Verdict(Failure.OUTAGE, "redis")  # the broker connection, as kombu names it
    return Verdict(Failure.POISON, "")


def explain(exc: BaseException) -> str:
    """``Type: message`` of what decided the verdict (inside an exception group: that member)."""
    if isinstance(exc, BaseExceptionGroup):
        verdict = classify(exc)
        return explain(next((e for e in exc.exceptions if classify(e) == verdict), exc.exceptions[0]))
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def outage_backoff_s(settings: Settings, streak: int) -> float:
    """How long a worker waits before putting a chunk back after ``streak`` outages in a row."""
    return float(min(settings.outage_backoff_max_s, settings.outage_backoff_base_s * 2 ** max(0, streak - 1)))


def note_waiting(settings: Settings, client: redis.Redis, stage: str, verdict: Verdict, detail: str) -> None:
    """Record that ``stage`` waits on ``verdict.on`` (best effort: Redis may be what is down)."""
    key = keyspace.stage_waiting(settings, stage)
    try:
        pipe = client.pipeline()
        pipe.hsetnx(key, "since", f"{time.time():.3f}")
        pipe.hset(key, mapping={"on": verdict.on, "kind": verdict.kind.value, "detail": detail[:300]})
        pipe.expire(key, WAITING_TTL_S)
        pipe.execute()
    except redis.RedisError:
        pass


def clear_waiting(settings: Settings, client: redis.Redis, stage: str) -> None:
    """A chunk went through: ``stage`` no longer waits."""
    client.delete(keyspace.stage_waiting(settings, stage))


def waiting_from_hash(raw: dict[bytes, bytes]) -> Waiting | None:
    """A stage's wait from its hash (``keyspace.stage_waiting``, read by the caller); None: no wait."""
    if not raw:
        return None
    return Waiting(on=raw.get(b"on", b"?").decode(), kind=raw.get(b"kind", b"?").decode(),
                   since=float(raw.get(b"since", b"0")), detail=raw.get(b"detail", b"").decode())
