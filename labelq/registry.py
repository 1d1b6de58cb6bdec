"""The adapter registry: which adapter version serves each task.

The pointer lives in Redis (students read it before every chunk: one GET) and
is mirrored in the store (``adapters/<task>/registry.json``), so a lost Redis
loses no state that matters: ``ensure`` puts the pointer back when Redis has
lost it (student and trainer workers at start, a student finding no adapter,
the trainer before every gate). ``pin`` makes
students serve one version whatever is promoted; ``rollback`` returns to the
version promoted before the current one.

Versions are claimed before training (:meth:`Registry.claim_version`): a
Redis counter hands out numbers, and a ``_CLAIM`` object created only if
absent in the store makes the number the claimant's for good, so two trainers
never write one version and a number is never reused, even after a Redis loss.
Each version's content hash (``labelq.adapter_manifest``) is kept here too
(:meth:`Registry.record_hash`); students check what they fetch against it.

Each version's ``train_config.json`` records the hash of the base it was
trained on (:func:`recorded_base_hash`; see ``labelq.models``).

A student chunk whose task has no version to serve is parked off the student
queue (``labelq.queue.parking``); every pointer change here (promote, rollback,
pin, a restore) moves the task's parked chunks back, and :func:`release_parked`
sweeps for any left behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import orjson
import redis

from labelq import keyspace, lua
from labelq.errors import ConfigError, ObjectNotFound, RetryableError
from labelq.keyspace import AdapterFile
from labelq.logging import get_logger
from labelq.queue.parking import PARKED_QUEUES, parked_depths, unpark
from labelq.schemas import utc_now_iso
from labelq.settings import Settings
from labelq.store import ObjectStore

log = get_logger(__name__)
CLAIM_TRIES = 20  # numbers tried before giving up: each lost try means another trainer took one


def recorded_base_hash(store: ObjectStore, task: str, version: int) -> str | None:
    """The base hash an adapter version was trained on; None for one trained before bases were recorded."""
    try:
        config = orjson.loads(store.get_bytes(keyspace.adapter_file(task, version, AdapterFile.TRAIN_CONFIG)))
    except (ObjectNotFound, orjson.JSONDecodeError):
        return None
    recorded = config.get("base_hash") if isinstance(config, dict) else None
    return recorded if isinstance(recorded, str) else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Registry:
    def __init__(self, settings: Settings, client: redis.Redis, store: ObjectStore) -> None:
        self._settings, self._redis, self._store = settings, client, store

    def _current(self, task: str) -> str:
        return keyspace.adapter_current(self._settings, task)

    def _pinned(self, task: str) -> str:
        return keyspace.adapter_pinned(self._settings, task)

    def _history(self, task: str) -> str:
        return keyspace.adapter_history(self._settings, task)

    def _hashes(self, task: str) -> str:
        return keyspace.adapter_hashes(self._settings, task)

    def state(self, task: str) -> dict[str, Any]:
        current, pinned = self._redis.mget(self._current(task), self._pinned(task))
        history = [int(v) for v in self._redis.lrange(self._history(task), 0, -1)]
        return {"current": int(current) if current else None, "pinned": int(pinned) if pinned else None,
                "history": history}

    def serving(self, task: str) -> int | None:
        """The version students must use now: the pinned one, else the current one."""
        pinned, current = self._redis.mget(*self.serving_keys(task))
        value = pinned or current
        return int(value) if value else None

    def serving_keys(self, task: str) -> list[str]:
        """The keys of which one exists exactly when ``task`` has a version to serve: what a student chunk
        parked for want of an adapter waits for (``labelq.queue.parking``)."""
        return [self._pinned(task), self._current(task)]

    def release_parked(self, task: str) -> int:
        """Move ``task``'s parked student chunks back to the queue if it has a version to serve now;
        how many moved. Called after every pointer change, and by the sweep (:func:`release_parked`)."""
        if self.serving(task) is None:
            return 0
        moved = unpark(self._settings, self._redis, "student", task)
        if moved:
            log.info("parked_chunks_released", task=task, chunks=moved)
        return moved

    def versions(self, task: str) -> list[int]:
        """Adapter versions present in the store (those with a metrics.json)."""
        found = set()
        for k in self._store.list(keyspace.adapter_prefix(task) + "/v"):
            version = keyspace.adapter_version_of(k)
            if version is not None and k.endswith(f"/{AdapterFile.METRICS}"):
                found.add(version)
        return sorted(found)

    def rolled_back(self, task: str) -> set[int]:
        """Versions the agreement monitor rolled back (``trainer.monitor``: a ``rolled_back.json`` beside
        their files), read with one listing."""
        return {v for k in self._store.list(keyspace.adapter_prefix(task) + "/v")
                if (v := keyspace.adapter_version_of(k)) is not None and k == keyspace.adapter_rolled_back(task, v)}

    def metrics(self, task: str, version: int) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self._store.get_bytes(keyspace.adapter_file(task, version, AdapterFile.METRICS)))
        return data

    def claim_version(self, task: str, claimant: Mapping[str, Any]) -> int:
        """A version number for a new adapter of ``task``, now the caller's alone.

        Redis hands out the number (the counter raised first to the highest version in the store, so
        a counter lost with Redis resumes above it), then the store creates ``v<N>/_CLAIM`` only if
        absent: when another trainer got there first (a counter behind the store), the next number is
        tried. ``claimant`` (dataset, host, ...) is written into the claim. A claimed version that is
        never completed (a killed trainer) leaves its number unused: it is never handed out again.
        """
        counter = keyspace.adapter_counter(self._settings, task)
        next_number = lua.script(self._redis, "version_claim")
        for _ in range(CLAIM_TRIES):
            version = int(next_number(keys=[counter], args=[self._highest(task)]))
            claim = {**claimant, "task": task, "version": version, "token": uuid.uuid4().hex,
                     "claimed_at": utc_now_iso()}
            if self._store.put_if_absent(keyspace.adapter_file(task, version, AdapterFile.CLAIM), orjson.dumps(claim)):
                log.info("adapter_version_claimed", task=task, adapter_version=version)
                return version
            log.warning("adapter_version_taken", task=task, adapter_version=version)
        raise RetryableError(f"could not claim an adapter version for task {task!r} in {CLAIM_TRIES} tries: every "
                             "number was taken by another trainer meanwhile")

    def _highest(self, task: str) -> int:
        """The highest version with any object in the store: claimed, half written or complete."""
        found = (keyspace.adapter_version_of(k) for k in self._store.list(keyspace.adapter_prefix(task) + "/v"))
        return max((v for v in found if v is not None), default=0)

    def record_hash(self, task: str, version: int, content_hash: str) -> None:
        """Keep a version's content hash (before its ``metrics.json`` makes it visible). The store's mirror
        takes it at the next promote, pin or rollback; until then the version's ``metrics.json`` holds it."""
        self._redis.hset(self._hashes(task), str(version), content_hash)

    def content_hash(self, task: str, version: int) -> str | None:
        """The content hash recorded for a version; from its ``metrics.json`` when Redis lost it; None for
        versions written before content hashes were kept."""
        found = self._redis.hget(self._hashes(task), str(version))
        if found:
            return _text(found)
        try:
            recorded = self.metrics(task, version).get("content_hash")
        except (ObjectNotFound, orjson.JSONDecodeError):
            return None
        return recorded if isinstance(recorded, str) else None

    def promote(self, task: str, version: int) -> None:
        if version not in self.versions(task):
            raise ConfigError(f"no adapter v{version} for task {task!r} in the store")
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._current(task), version)
        pipe.rpush(self._history(task), version)
        pipe.execute()
        self._mirror(task)
        self.release_parked(task)  # after the mirror: a failure here leaves it to the sweep

    def rollback(self, task: str) -> int:
        history = self.state(task)["history"]
        if len(history) < 2:
            raise ConfigError(f"task {task!r} has no earlier promoted adapter to roll back to")
        previous: int = history[-2]
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpop(self._history(task))
        pipe.set(self._current(task), previous)
        pipe.execute()
        self._mirror(task)
        self.release_parked(task)  # after the mirror: a failure here leaves it to the sweep
        return previous

    def pin(self, task: str, version: int | None) -> None:
        if version is None:
            self._redis.delete(self._pinned(task))
        elif version not in self.versions(task):
            raise ConfigError(f"no adapter v{version} for task {task!r} in the store")
        else:
            self._redis.set(self._pinned(task), version)
        self._mirror(task)
        self.release_parked(task)  # after the mirror: a failure here leaves it to the sweep

    def _mirror(self, task: str) -> None:
        hashes = {_text(v): _text(h) for v, h in self._redis.hgetall(self._hashes(task)).items()}
        body = {**self.state(task), "hashes": hashes, "updated_at": utc_now_iso()}
        self._store.put_bytes(keyspace.registry_mirror(task), orjson.dumps(body, option=orjson.OPT_INDENT_2))

    def ensure(self, task: str) -> bool:
        """Rebuild ``task``'s pointer from the store's mirror when Redis has lost it (no current, pinned
        or history key); True when it was restored. A fresh task (no mirror either) stays empty. The
        keys are watched: a promotion that lands meanwhile wins, and nothing is restored over it."""
        keys = (self._current(task), self._pinned(task), self._history(task))
        if self._redis.exists(*keys):
            return False
        try:
            mirror = orjson.loads(self._store.get_bytes(keyspace.registry_mirror(task)))
        except ObjectNotFound:
            return False
        with self._redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*keys)
                if pipe.exists(*keys):
                    return False
                pipe.multi()
                self._write_mirror(pipe, task, mirror)
                pipe.execute()
            except redis.WatchError:
                return False
        log.warning("registry_restored", task=task, detail="Redis had lost the adapter pointer; "
                    "rebuilt from the store's mirror")
        self.release_parked(task)
        return True

    def ensure_all(self) -> list[str]:
        """:meth:`ensure` every task that has a mirror in the store (at worker and trainer start)."""
        tasks = {unquote(path.split("/")[1]) for path in self._store.list("adapters/")
                 if path.count("/") == 2 and path.endswith("/registry.json")}
        return [task for task in sorted(tasks) if self.ensure(task)]

    def restore(self, task: str) -> bool:
        """Put the pointer back from the store's mirror (after a Redis loss). False if none."""
        try:
            mirror = orjson.loads(self._store.get_bytes(keyspace.registry_mirror(task)))
        except ObjectNotFound:
            return False
        pipe = self._redis.pipeline(transaction=True)
        self._write_mirror(pipe, task, mirror)
        pipe.execute()
        self.release_parked(task)
        return True

    def _write_mirror(self, pipe: Any, task: str, mirror: dict[str, Any]) -> None:
        """Queue on ``pipe`` the Redis writes that make the pointer what ``mirror`` says."""
        pipe.delete(self._history(task), self._current(task), self._pinned(task), self._hashes(task))
        if mirror.get("hashes"):
            pipe.hset(self._hashes(task), mapping=mirror["hashes"])
        if mirror["history"]:
            pipe.rpush(self._history(task), *mirror["history"])
        if mirror["current"] is not None:
            pipe.set(self._current(task), mirror["current"])
        if mirror["pinned"] is not None:
            pipe.set(self._pinned(task), mirror["pinned"])

def restore_lost_registries(settings: Settings) -> None:
    """At student and trainer worker start: rebuild every adapter pointer Redis has lost. An outage
    here is logged and passed over (students and the trainer ensure the pointer again before use);
    a configuration error stops the worker like any other."""
    from labelq.redis_server import connect
    from labelq.store import open_store

    try:
        restored = Registry(settings, connect(settings), open_store(settings)).ensure_all()
    except (RetryableError, redis.RedisError, OSError) as exc:
        log.warning("registry_restore_skipped", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        return
    if restored:
        log.warning("registries_restored", tasks=restored)


def release_parked(settings: Settings, client: redis.Redis, store: ObjectStore) -> dict[str, int]:
    """The sweep: move back the parked chunks of every task that can be served now (a pointer Redis
    had lost is restored from the store first; with ``LABELQ_STUDENT_ALLOW_BASE_MODEL`` every task
    can). A chunk is parked only while its task has no version, and every pointer change unparks, so
    this finds work only after a crash between a promotion and its unpark, or a settings change.
    Returns task -> chunks moved. The trainer runs it every poll, a student worker at its start."""
    from labelq.task_registry import known_tasks

    registry = Registry(settings, client, store)
    released = {}
    for task in parked_depths(settings, client, known_tasks(settings, client)):
        if settings.student_allow_base_model:
            moved = sum(unpark(settings, client, queue, task) for queue in PARKED_QUEUES)
        else:
            registry.ensure(task)  # a pointer restored here releases the task's chunks itself
            moved = registry.release_parked(task)
        if moved:
            released[task] = moved
    if released:
        log.warning("parked_chunks_swept", tasks=released,
                    detail="parked chunks of tasks that can be served were still waiting: moved back")
    return released


def sweep_parked(settings: Settings) -> None:
    """At a student or trainer worker's start: :func:`release_parked`; an outage is logged and passed over."""
    from labelq.redis_server import connect
    from labelq.store import open_store

    try:
        release_parked(settings, connect(settings), open_store(settings))
    except (RetryableError, redis.RedisError, OSError) as exc:
        log.warning("parked_sweep_skipped", error=f"{type(exc).__name__}: {str(exc)[:200]}")
