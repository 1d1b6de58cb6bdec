"""The adapter registry: which adapter version serves each task.

The pointer lives in Redis (students read it before every chunk: one GET) and
is mirrored in the store (``adapters/<task>/registry.json``), so a lost Redis
loses no state that matters: ``restore`` puts the pointer back. ``pin`` makes
students serve one version whatever is promoted; ``rollback`` returns to the
version promoted before the current one.

Each version's ``train_config.json`` records the hash of the base it was
trained on (:func:`recorded_base_hash`; see ``labelq.models``).
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from labelq import keyspace
from labelq.errors import ConfigError, ObjectNotFound
from labelq.keyspace import AdapterFile
from labelq.schemas import utc_now_iso
from labelq.settings import Settings
from labelq.store import ObjectStore


def recorded_base_hash(store: ObjectStore, task: str, version: int) -> str | None:
    """The base hash an adapter version was trained on; None for one trained before bases were recorded."""
    try:
        config = orjson.loads(store.get_bytes(keyspace.adapter_file(task, version, AdapterFile.TRAIN_CONFIG)))
    except (ObjectNotFound, orjson.JSONDecodeError):
        return None
    recorded = config.get("base_hash") if isinstance(config, dict) else None
    return recorded if isinstance(recorded, str) else None


class Registry:
    def __init__(self, settings: Settings, client: redis.Redis, store: ObjectStore) -> None:
        self._settings, self._redis, self._store = settings, client, store

    def _current(self, task: str) -> str:
        return keyspace.adapter_current(self._settings, task)

    def _pinned(self, task: str) -> str:
        return keyspace.adapter_pinned(self._settings, task)

    def _history(self, task: str) -> str:
        return keyspace.adapter_history(self._settings, task)

    def state(self, task: str) -> dict[str, Any]:
        current, pinned = self._redis.mget(self._current(task), self._pinned(task))
        history = [int(v) for v in self._redis.lrange(self._history(task), 0, -1)]
        return {"current": int(current) if current else None, "pinned": int(pinned) if pinned else None,
                "history": history}

    def serving(self, task: str) -> int | None:
        """The version students must use now: the pinned one, else the current one."""
        pinned, current = self._redis.mget(self._pinned(task), self._current(task))
        value = pinned or current
        return int(value) if value else None

    def versions(self, task: str) -> list[int]:
        """Adapter versions present in the store (those with a metrics.json)."""
        found = set()
        for k in self._store.list(keyspace.adapter_prefix(task) + "/v"):
            version = keyspace.adapter_version_of(k)
            if version is not None and k.endswith(f"/{AdapterFile.METRICS}"):
                found.add(version)
        return sorted(found)

    def metrics(self, task: str, version: int) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self._store.get_bytes(keyspace.adapter_file(task, version, AdapterFile.METRICS)))
        return data

    def next_version(self, task: str) -> int:
        return max(self.versions(task), default=0) + 1

    def promote(self, task: str, version: int) -> None:
        if version not in self.versions(task):
            raise ConfigError(f"no adapter v{version} for task {task!r} in the store")
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._current(task), version)
        pipe.rpush(self._history(task), version)
        pipe.execute()
        self._mirror(task)

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
        return previous

    def pin(self, task: str, version: int | None) -> None:
        if version is None:
            self._redis.delete(self._pinned(task))
        elif version not in self.versions(task):
            raise ConfigError(f"no adapter v{version} for task {task!r} in the store")
        else:
            self._redis.set(self._pinned(task), version)
        self._mirror(task)

    def _mirror(self, task: str) -> None:
        body = {**self.state(task), "updated_at": utc_now_iso()}
        self._store.put_bytes(keyspace.registry_mirror(task), orjson.dumps(body, option=orjson.OPT_INDENT_2))

    def restore(self, task: str) -> bool:
        """Put the pointer back from the store's mirror (after a Redis loss). False if none."""
        try:
            mirror = orjson.loads(self._store.get_bytes(keyspace.registry_mirror(task)))
        except ObjectNotFound:
            return False
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._history(task), self._current(task), self._pinned(task))
        if mirror["history"]:
            pipe.rpush(self._history(task), *mirror["history"])
        if mirror["current"] is not None:
            pipe.set(self._current(task), mirror["current"])
        if mirror["pinned"] is not None:
            pipe.set(self._pinned(task), mirror["pinned"])
        pipe.execute()
        return True
