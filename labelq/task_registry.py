"""The tasks labelq has counters for, without scanning the keyspace.

A task enters the Redis set ``keyspace.task_registry`` in the same step as its
first counts: the producer's enqueue transaction (``ChunkPublisher.enqueue``),
a chunk's commit (``commit_chunk.lua``: workers and ``labelq teach``) and a
redrive (``redrive.lua``). So every task with a ``stats`` hash is in the set,
and ``labelq status``, ``labelq audit``, metrics and the trainer read one set
instead of a SCAN whose cost grows with everything Redis holds (2,011 commands
per call at 1M keys).

A Redis written by a labelq from before the registry has ``stats`` hashes and
no set: the first reader that finds the ``task_registry_complete`` marker
missing scans the ``stats`` keys once, adds what it found and sets the marker
(:func:`known_tasks`). Deleting the marker makes the next reader scan again.
"""

from __future__ import annotations

import redis

from labelq import keyspace
from labelq.logging import get_logger
from labelq.settings import Settings

log = get_logger(__name__)


def _names(raw: set[bytes] | set[str]) -> set[str]:
    return {m.decode() if isinstance(m, bytes) else m for m in raw}


def known_tasks(settings: Settings, client: redis.Redis) -> list[str]:
    """Every task with counters, sorted: two commands in one round trip (plus the one-time scan)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.smembers(keyspace.task_registry(settings))
        pipe.exists(keyspace.task_registry_complete(settings))
        members, complete = pipe.execute()
    names = _names(members)
    if not complete:
        names |= _migrate(settings, client)
    return sorted(names)


def _migrate(settings: Settings, client: redis.Redis) -> set[str]:
    """Scan the ``stats`` keys once and add their tasks to the registry (a Redis from before it)."""
    prefix = keyspace.stats_prefix(settings)
    found = {k.decode()[len(prefix):] for k in client.scan_iter(match=prefix + "*", count=1000)}
    try:
        with client.pipeline(transaction=True) as pipe:
            if found:
                pipe.sadd(keyspace.task_registry(settings), *sorted(found))
            pipe.set(keyspace.task_registry_complete(settings), 1)
            pipe.execute()
    except (redis.exceptions.OutOfMemoryError, redis.exceptions.ExecAbortError, redis.exceptions.ReadOnlyError) \
            as exc:
        # A Redis at its ceiling (or a replica) refuses the write: this read still answers from the scan,
        # and the next reader tries again (status, audit and metrics only read a full Redis).
        log.warning("task_registry_not_filled", error=type(exc).__name__, tasks=len(found))
        return found
    log.info("task_registry_filled", tasks=len(found), detail="scanned the stats keys once")
    return found
