"""The object-store interface: bytes under keys, atomic writes, create-if-absent, listing by prefix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable


class StoredObject(NamedTuple):
    """One object as a listing sees it: its key, when it was last written (epoch seconds), its size."""

    key: str
    modified: float
    size: int


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-looking objects under one root or prefix.

    Every write is atomic: a reader sees the whole old object, the whole new one,
    or none. Keys are checked by :func:`labelq.store.keys.check_key`.
    """

    url: str

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if no object has it, atomically (two writers: one wins).

        True when the key now holds ``data`` (this call created it, or an earlier try of the same
        write did: a retried request whose first try landed); False when it holds other bytes.
        """
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[str]:
        """Keys under ``prefix`` (a key prefix, not only a folder), sorted, and after ``start_after`` (any
        string: keys equal to it or before it are skipped) when given. Lazy: keys come a page (S3) or a
        folder (local) at a time, so listing millions of objects holds one page or folder in memory."""
        ...

    def list_modified(self, prefix: str = "") -> Iterator[StoredObject]:
        """Objects under ``prefix`` with their last write time and size, page by page (not sorted):
        for deleting by age."""
        ...

    def delete(self, key: str) -> None: ...

    def put_file(self, key: str, path: Path) -> None: ...

    def get_file(self, key: str, path: Path) -> None:
        """Download to ``path`` atomically (temp file, then rename)."""
        ...

    def open_read(self, key: str) -> Iterator[bytes]:
        """Stream an object's bytes in blocks, for large inputs."""
        ...
