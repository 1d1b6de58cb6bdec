"""A local cache of adapter versions, filled from the store atomically and checked against the registry.

``<cache_dir>/<task>/v<N>/`` appears whole or not at all (downloaded into a
temp folder, checked, then renamed). Each (task, version) gets an integer id,
new for every copy this process fetches, because vLLM keeps serving the weights
it first loaded under an id. Older versions beyond ``keep`` are evicted.
:meth:`AdapterCache.base_hash` reads which base a version was trained on
(``train_config.json`` in the store), once per version.

Every copy is checked against the content hash the registry records for its
version (``labelq.adapter_manifest``): a download when it arrives, a local
copy before this process first uses it and again whenever its files change on
disk. A copy that does not match is refused (logged, removed) and fetched
again, up to ``FETCH_ATTEMPTS`` times; after that ``IntegrityError`` (the
store's copy itself is wrong: an operator must act). Versions written before
content hashes were kept have no manifest and are served unchecked.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

from labelq import adapter_manifest
from labelq.engines import Adapter
from labelq.errors import IntegrityError
from labelq.keyspace import AdapterFile
from labelq.logging import get_logger
from labelq.registry import recorded_base_hash
from labelq.store import ObjectStore, segment

log = get_logger(__name__)
SERVED_FILES = (AdapterFile.CONFIG, AdapterFile.WEIGHTS)
FETCH_ATTEMPTS = 3
Fingerprint = tuple[tuple[str, int, int], ...]
# vLLM keeps the weights it first loaded under an id for the engine's life: ids are unique in the process,
# not per cache, so two runtimes sharing one engine (tests, a runtime made again) never reuse one.
_LORA_IDS = itertools.count(1)


def _fingerprint(folder: Path) -> Fingerprint | None:
    """Size and mtime of a copy's files (None when one is missing): a copy whose files changed is
    checked again, so a chunk costs a few stats, not a hash of the weights."""
    found = []
    for name in (*SERVED_FILES, AdapterFile.MANIFEST):
        try:
            st = (folder / name).stat()
        except FileNotFoundError:
            if name == AdapterFile.MANIFEST:
                continue  # a version written before manifests existed
            return None
        found.append((str(name), st.st_size, st.st_mtime_ns))
    return tuple(found)


class AdapterCache:
    def __init__(self, store: ObjectStore, root: Path, keep: int = 2) -> None:
        self._store, self._root, self._keep = store, root, keep
        self._ids: dict[tuple[str, int], int] = {}
        self._next_id = _LORA_IDS  # per process: engines share ids across every cache of the process
        self._base_hashes: dict[tuple[str, int], str | None] = {}
        self._checked: dict[tuple[str, int], tuple[str | None, Fingerprint]] = {}

    def _dir(self, task: str, version: int) -> Path:
        return self._root / segment(task) / f"v{version}"

    def get(self, task: str, version: int, content_hash: str | None) -> Adapter:
        """The adapter on local disk, checked against ``content_hash`` (the registry's; None for a version
        written before hashes were kept), fetching it first if needed."""
        final, key = self._dir(task, version), (task, version)
        fingerprint = _fingerprint(final)
        if fingerprint is not None and self._checked.get(key) != (content_hash, fingerprint):
            try:
                adapter_manifest.check_folder(final, SERVED_FILES, content_hash)
            except IntegrityError as exc:
                log.error("adapter_copy_refused", task=task, adapter_version=version, detail=str(exc))
                shutil.rmtree(final, ignore_errors=True)
                fingerprint = None
            else:
                self._checked[key] = (content_hash, fingerprint)
        if fingerprint is None:
            self._fetch(task, version, content_hash, final)
            self._ids.pop(key, None)  # new bytes: a new id, or vLLM keeps the weights it loaded
            self._checked[key] = (content_hash, _fingerprint(final) or ())
            self._evict(task, keep_version=version)
        if key not in self._ids:
            self._ids[key] = next(self._next_id)
        return Adapter(task, version, str(final), self._ids[key])

    def _fetch(self, task: str, version: int, content_hash: str | None, final: Path) -> None:
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                adapter_manifest.fetch(self._store, task, version, SERVED_FILES, final, content_hash)
            except IntegrityError as exc:
                log.error("adapter_download_refused", task=task, adapter_version=version, attempt=attempt,
                          detail=str(exc))
                if attempt == FETCH_ATTEMPTS:
                    raise
            else:
                log.info("adapter_downloaded", task=task, adapter_version=version, content_hash=content_hash)
                return

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
                self._checked.pop((task, version), None)
                log.info("adapter_evicted", task=task, adapter_version=version)
