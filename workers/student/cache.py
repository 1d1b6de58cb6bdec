"""A local cache of adapter versions, filled from the store atomically.

``<cache_dir>/<task>/v<N>/`` appears whole or not at all (downloaded into a
temp folder, then renamed). Each (task, version) gets an integer id, new for
every version this process sees, because vLLM keeps serving the weights it
first loaded under an id. Older versions beyond ``keep`` are evicted.
:meth:`AdapterCache.base_hash` reads which base a version was trained on
(``train_config.json`` in the store), once per version.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from labelq import keyspace
from labelq.engines import Adapter
from labelq.keyspace import AdapterFile
from labelq.logging import get_logger
from labelq.registry import recorded_base_hash
from labelq.store import ObjectStore, segment

log = get_logger(__name__)
SERVED_FILES = (AdapterFile.CONFIG, AdapterFile.WEIGHTS)


class AdapterCache:
    def __init__(self, store: ObjectStore, root: Path, keep: int = 2) -> None:
        self._store, self._root, self._keep = store, root, keep
        self._ids: dict[tuple[str, int], int] = {}
        self._next_id = itertools.count(1)
        self._base_hashes: dict[tuple[str, int], str | None] = {}

    def _dir(self, task: str, version: int) -> Path:
        return self._root / segment(task) / f"v{version}"

    def get(self, task: str, version: int) -> Adapter:
        """The adapter on local disk, downloading it first if needed."""
        final = self._dir(task, version)
        if not (final / SERVED_FILES[-1]).exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=final.parent))
            try:
                for name in SERVED_FILES:
                    self._store.get_file(keyspace.adapter_file(task, version, name), work / name)
                shutil.rmtree(final, ignore_errors=True)
                work.rename(final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            log.info("adapter_downloaded", task=task, adapter_version=version)
            self._evict(task, keep_version=version)
        if (task, version) not in self._ids:
            self._ids[(task, version)] = next(self._next_id)
        return Adapter(task, version, str(final), self._ids[(task, version)])

    def base_hash(self, task: str, version: int) -> str | None:
        """The hash of the base the version was trained on; None for adapters trained before bases were
        recorded (no ``train_config.json``, or one without ``base_hash``)."""
        if (task, version) not in self._base_hashes:
            self._base_hashes[(task, version)] = recorded_base_hash(self._store, task, version)
        return self._base_hashes[(task, version)]

    def _evict(self, task: str, keep_version: int) -> None:
        folder = self._root / segment(task)
        versions = sorted((int(p.name[1:]) for p in folder.iterdir() if p.name.startswith("v")
                           and p.name[1:].isdigit()), reverse=True)
        kept = [keep_version, *[v for v in versions if v != keep_version][:self._keep - 1]]
        for version in versions:
            if version not in kept:
                shutil.rmtree(folder / f"v{version}", ignore_errors=True)
                log.info("adapter_evicted", task=task, adapter_version=version)
