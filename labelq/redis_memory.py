"""Redis memory against its ceiling, and the reserve that lets workers drain a full Redis.

Redis runs with ``maxmemory`` and ``noeviction`` (``infra/redis.conf``, the
embedded server: ``LABELQ_REDIS_MAXMEMORY_MB``): past the ceiling it refuses
every command that may add memory (``OutOfMemoryError``) and still serves
reads, pops and deletes. Three rules keep labelq working there:

* **producers pause first**: above ``redis_memory_high_water`` x maxmemory a
  producer waits (its backpressure wait, like a full queue) until Redis is
  below ``redis_memory_low_water`` (``labelq.queue.publish``);
* **a reserve for the workers**: while Redis is below the low water, a key of
  ``redis_memory_reserve_share`` x maxmemory zero bytes is held
  (``keyspace.memory_reserve``, made with one ``SETRANGE``, no bytes sent).
  Draining a chunk needs a little memory before it frees its message (the
  unacked copy, the done marker, counters), so a worker that meets a full
  Redis deletes the reserve (``DEL`` is served at the ceiling) and the queues
  drain; it is made again once Redis is back below the low water;
* **a refused write is an outage** (``labelq.queue.policy``): the chunk waits
  and goes back to its queue, never counted as a failed delivery; a worker
  starts and keeps consuming against a full Redis (``labelq.queue.transport``).

``maxmemory`` 0 means Redis has no ceiling: nothing pauses and no reserve is made.
The reserve counts as used memory (producers pause 2% earlier) and, after an
AOF rewrite, takes its size on disk too.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from labelq import keyspace
from labelq.logging import get_logger
from labelq.settings import Settings

log = get_logger(__name__)
REDIS_MAX_STRING_BYTES = 512 * 1024 * 1024  # Redis's limit on one string: the largest reserve


@dataclass(frozen=True, slots=True)
class RedisMemory:
    """What Redis uses (``INFO memory``) and the reserve it holds now."""

    used_bytes: int
    max_bytes: int  # maxmemory; 0: no ceiling
    reserve_bytes: int  # the reserve held now (0: released, or none)

    @property
    def share(self) -> float | None:
        """``used / max``; None without a ceiling."""
        return self.used_bytes / self.max_bytes if self.max_bytes else None

    def above(self, share: float) -> bool:
        """Using more than ``share`` of the ceiling (never, without one)."""
        return bool(self.max_bytes) and self.used_bytes > share * self.max_bytes

    @property
    def full(self) -> bool:
        """At the ceiling: Redis refuses writes that may add memory."""
        return self.above(1.0)


@dataclass(frozen=True, slots=True)
class ReservePolicy:
    """Where the reserve lives and how large it is; from the settings, or from a worker's transport options."""

    key: str  # keyspace.memory_reserve
    share: float  # of maxmemory
    low_water: float  # made only while Redis stays below this share with it

    @classmethod
    def from_settings(cls, settings: Settings) -> ReservePolicy:
        return cls(keyspace.memory_reserve(settings), settings.redis_memory_reserve_share,
                   settings.redis_memory_low_water)

    def size_bytes(self, max_bytes: int) -> int:
        return min(REDIS_MAX_STRING_BYTES, int(self.share * max_bytes))


def read_memory(client: redis.Redis, reserve_key: str) -> RedisMemory:
    """``used_memory`` and ``maxmemory`` from ``INFO memory``, and the reserve's size, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.info("memory")
    pipe.strlen(reserve_key)
    info, reserve = pipe.execute()
    return RedisMemory(used_bytes=int(info["used_memory"]), max_bytes=int(info.get("maxmemory", 0)),
                       reserve_bytes=int(reserve))


def make_reserve(client: redis.Redis, policy: ReservePolicy, memory: RedisMemory) -> RedisMemory:
    """Hold the reserve when it is missing and Redis stays below the low water with it."""
    size = policy.size_bytes(memory.max_bytes)
    if memory.reserve_bytes or not size or memory.used_bytes + size > policy.low_water * memory.max_bytes:
        return memory
    # SETRANGE on a missing key makes a zero-filled string that long, server side; two callers at
    # once write the same byte, so it is made once whoever wins.
    client.setrange(policy.key, size - 1, b"\0")
    log.info("redis_memory_reserve_held", reserve_bytes=size, used_bytes=memory.used_bytes,
             max_bytes=memory.max_bytes)
    return RedisMemory(memory.used_bytes + size, memory.max_bytes, size)


def release_reserve(client: redis.Redis, key: str, why: str) -> bool:
    """Free the reserve (``DEL`` is served at the ceiling); True when there was one to free."""
    released = bool(client.delete(key))
    if released:
        log.warning("redis_memory_reserve_released", why=why,
                    detail="Redis reached its maxmemory: the reserve is freed so the queues drain; raise "
                           "maxmemory or find what fills Redis (labelq status)")
    return released


def keep_reserve(client: redis.Redis, policy: ReservePolicy) -> RedisMemory:
    """A worker's periodic look: free the reserve at the ceiling, make it again below the low water."""
    memory = read_memory(client, policy.key)
    if memory.full and memory.reserve_bytes:
        release_reserve(client, policy.key, "at the ceiling")
        return read_memory(client, policy.key)
    return make_reserve(client, policy, memory)


def refused_for_memory(exc: BaseException) -> bool:
    """``exc`` (or one it was raised from) is Redis refusing a write at its ceiling."""
    seen: list[BaseException | None] = [exc]
    for _ in range(10):  # a chain may loop
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        if exc is None or exc in seen:
            return False
        seen.append(exc)
    return False
