"""A local directory as the object store (the embedded default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from labelq.errors import InvalidKey, ObjectNotFound, ServiceUnavailable
from labelq.store.base import StoredObject
from labelq.store.keys import check_key, check_prefix

_TMP = ".tmp-"
_BLOCK_BYTES = 1 << 20


def _atomic_copy(src: Path, dest: Path) -> None:
    """Copy to a temp file beside ``dest``, then rename: readers never see half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP, dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStore:
    """Objects are files under ``root``; writes go to a temp file and are renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        check_key(key)
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKey("key escapes the store root")
        return path

    def _temp_beside(self, path: Path, data: bytes) -> str:
        """``data`` written and fsynced to a temp file in ``path``'s folder (made if missing)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return tmp

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._temp_beside(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """The whole object is written to a temp file, then hard-linked to its name: ``link`` fails
        when the name exists, so of two writers exactly one creates it, and never half of it."""
        path = self._path(key)
        tmp = self._temp_beside(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes() == data
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def put_file(self, key: str, path: Path) -> None:
        _atomic_copy(path, self._path(key))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            if not self.root.is_dir():  # the store itself is gone (an unmounted volume): not a missing object
                raise ServiceUnavailable(f"store root {self.root} is not a directory", dependency="store") from exc
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from exc

    def get_file(self, key: str, path: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.url}")
        _atomic_copy(src, path)

    def open_read(self, key: str) -> Iterator[bytes]:
        try:
            fh = self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from exc
        with fh:
            while block := fh.read(_BLOCK_BYTES):
                yield block

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_modified(self, prefix: str = "") -> Iterator[StoredObject]:
        for rel in self.list(prefix):
            try:
                st = (self.root / rel).stat()
            except FileNotFoundError:  # deleted meanwhile
                continue
            yield StoredObject(rel, st.st_mtime, st.st_size)

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[str]:
        check_prefix(prefix)
        # Walk only the deepest folder the prefix names; filter the rest by string.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        return self._walk(self.root / folder if folder else self.root, folder, prefix, start_after or "")

    def _walk(self, path: Path, rel: str, prefix: str, after: str) -> Iterator[str]:
        """Keys under ``path`` in key order, one folder's names in memory at a time. A folder sorts as its
        name plus ``/`` (every key in it starts so), which makes depth-first order the keys' order; a folder
        whose keys all sort at or before ``after`` is skipped unopened."""
        try:
            with os.scandir(path) as found:
                entries = [(e.name + "/" if e.is_dir() and not e.is_symlink() else e.name)
                           for e in found if not e.name.startswith(_TMP)]
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in sorted(entries):
            full = f"{rel}/{name}" if rel else name
            if name.endswith("/"):
                if not (full.startswith(prefix) or prefix.startswith(full)):
                    continue
                if full < after and not after.startswith(full):
                    continue
                yield from self._walk(path / name[:-1], full[:-1], prefix, after)
            elif full.startswith(prefix) and full > after:
                yield full
