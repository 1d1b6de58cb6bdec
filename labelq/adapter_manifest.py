"""Write-once adapter versions: a manifest of their files' sha256, and one content hash over it.

A version ``adapters/<task>/v<N>/`` is claimed before training (``_CLAIM``:
:meth:`labelq.registry.Registry.claim_version`), then its files are written
once each with the store's create-if-absent (:func:`publish`), then
``manifest.json`` lists them with their sha256 and size, then ``metrics.json``
(the training report, which carries the content hash) marks it complete. No
write ever replaces an object of a version, so a version names one set of
files for good.

The content hash is ``sha256:<hex>`` of the manifest's bytes: one string that
changes with any byte of any file. The registry keeps it per version (Redis,
mirrored in the store); a reader (the student's cache, the trainer fetching
the serving adapter) checks a manifest against it and each file against the
manifest (:func:`fetch`, :func:`check_folder`) and refuses a mismatch with
``IntegrityError``. Versions written before manifests existed have neither:
they are read unchecked (``expected`` is None and there is no manifest).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from labelq import keyspace
from labelq.errors import DecodeError, IntegrityError, ObjectNotFound
from labelq.hashing import file_sha256
from labelq.keyspace import AdapterFile
from labelq.store import ObjectStore

HASH_PREFIX = "sha256:"


@dataclass(frozen=True, slots=True)
class FileEntry:
    sha256: str  # hex
    size_bytes: int



def build_manifest(task: str, version: int, files: Mapping[AdapterFile, Path]) -> bytes:
    """The manifest's bytes (key-sorted JSON: the same files always give the same bytes)."""
    entries = {str(name): {"sha256": file_sha256(path), "size_bytes": path.stat().st_size}
               for name, path in files.items()}
    return orjson.dumps({"task": task, "version": version, "files": entries},
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


def content_hash(manifest: bytes) -> str:
    return HASH_PREFIX + hashlib.sha256(manifest).hexdigest()


def parse_manifest(manifest: bytes) -> dict[str, FileEntry]:
    """File name -> entry; DecodeError when the bytes are not a manifest."""
    try:
        files = orjson.loads(manifest)["files"]
        return {str(name): FileEntry(str(e["sha256"]), int(e["size_bytes"])) for name, e in files.items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"not an adapter manifest: {exc}") from exc


def publish(store: ObjectStore, task: str, version: int, files: Mapping[AdapterFile, Path]) -> str:
    """Write a claimed version's files once each, then their manifest; the content hash.

    IntegrityError when an object of the version already holds other bytes: another writer used
    this version although its claim was not theirs (a retried write of the same bytes is fine).
    """
    for name, path in files.items():
        _create(store, keyspace.adapter_file(task, version, name), path.read_bytes())
    manifest = build_manifest(task, version, files)
    _create(store, keyspace.adapter_file(task, version, AdapterFile.MANIFEST), manifest)
    return content_hash(manifest)


def _create(store: ObjectStore, key: str, data: bytes) -> None:
    if not store.put_if_absent(key, data):
        raise IntegrityError(f"{key} already holds other bytes in {store.url}: an adapter version is "
                             "written once, by the trainer that claimed it")


def _check(manifest: bytes | None, expected: str | None, folder: Path, names: Iterable[AdapterFile],
           where: str) -> None:
    if manifest is None:
        if expected is not None:
            raise IntegrityError(f"{where} has no {AdapterFile.MANIFEST} but the registry records {expected}")
        return  # written before manifests existed: nothing to check against
    if expected is not None and content_hash(manifest) != expected:
        raise IntegrityError(f"{where}: manifest hash {content_hash(manifest)} is not the registry's {expected}")
    try:
        entries = parse_manifest(manifest)
    except DecodeError as exc:
        raise IntegrityError(f"{where}: {exc}") from exc
    for name in names:
        entry, path = entries.get(str(name)), folder / name
        if entry is None:
            raise IntegrityError(f"{where}: {name} is not in its manifest")
        if not path.is_file() or path.stat().st_size != entry.size_bytes or file_sha256(path) != entry.sha256:
            raise IntegrityError(f"{where}: {name} does not match the sha256 in its manifest")


def check_folder(folder: Path, names: Iterable[AdapterFile], expected: str | None) -> None:
    """Check a local copy (``names`` and the ``manifest.json`` beside them); IntegrityError on a mismatch."""
    manifest_path = folder / AdapterFile.MANIFEST
    manifest = manifest_path.read_bytes() if manifest_path.is_file() else None
    _check(manifest, expected, folder, names, f"local copy {folder}")


def fetch(store: ObjectStore, task: str, version: int, names: Iterable[AdapterFile], dest: Path,
          expected: str | None) -> None:
    """Download ``names`` and the manifest of a version into ``dest`` (created whole, or not at all) and
    check them against ``expected`` (the registry's content hash); IntegrityError on a mismatch, with
    nothing left at ``dest``."""
    names = list(names)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        try:
            manifest: bytes | None = store.get_bytes(keyspace.adapter_file(task, version, AdapterFile.MANIFEST))
        except ObjectNotFound:
            manifest = None
        if manifest is not None:
            (work / AdapterFile.MANIFEST).write_bytes(manifest)
        for name in names:
            store.get_file(keyspace.adapter_file(task, version, name), work / name)
        _check(manifest, expected, work, names, f"{keyspace.adapter_prefix(task, version)} in {store.url}")
        shutil.rmtree(dest, ignore_errors=True)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
