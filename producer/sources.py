"""Input sources, streamed in constant memory: raw records with their origin.

A SOURCE is a path (JSONL, a JSON array, or a gzip of either: sniffed from the
bytes, not the name), ``-`` for stdin, or ``s3://bucket/prefix`` (every object
under the prefix). Records longer than the size limit are never held whole:
their head is kept for the dead-letter store and the rest is skipped.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple
from urllib.parse import urlsplit

from labelq.errors import ConfigError

GZIP_MAGIC = b"\x1f\x8b"
_BLOCK_BYTES = 1 << 20


class RawRecord(NamedTuple):
    """One candidate session as bytes. ``oversize``: ``data`` is only its head.

    A NamedTuple, not a dataclass: one is built per input line, so construction cost counts.
    """

    source: str
    line: int
    data: bytes
    oversize: bool = False
    structural_error: str | None = None  # set when the container itself is broken


class _CountingReader(io.RawIOBase):
    """Counts the bytes pulled through it (for progress on compressed input too).

    ``inner`` is a binary file (read through ``readinto``) or an iterator of
    byte blocks (an object-store stream).
    """

    def __init__(self, inner: IO[bytes] | Iterator[bytes], on_bytes: Callable[[int], None]) -> None:
        self._file = inner if hasattr(inner, "readinto") else None
        self._blocks = None if self._file is not None else inner
        self._on_bytes = on_bytes
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._file is not None:
            n = self._file.readinto(buffer) or 0
        else:
            if not self._pending:
                assert self._blocks is not None
                self._pending = next(self._blocks, b"")
            n = min(len(buffer), len(self._pending))
            buffer[:n] = self._pending[:n]
            self._pending = self._pending[n:]
        self._on_bytes(n)
        return n


def _binary_stream(raw: io.RawIOBase) -> IO[bytes]:
    stream = io.BufferedReader(raw, buffer_size=_BLOCK_BYTES)
    if stream.peek(2)[:2] == GZIP_MAGIC:
        import gzip

        return io.BufferedReader(gzip.GzipFile(fileobj=stream, mode="rb"), buffer_size=_BLOCK_BYTES)
    return stream


def _first_significant_byte(stream: IO[bytes]) -> bytes:
    head: bytes = stream.peek(4096)  # type: ignore[attr-defined]
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]


def iter_stream(stream: IO[bytes], source: str, max_bytes: int) -> Iterator[RawRecord]:
    """Records from one decompressed stream: a JSON array or JSON lines.

    A gzip stream that turns out to be broken (it starts with gzip's magic bytes but is not one, or it is
    cut short) ends the source with one ``invalid_gzip`` record: what was read before it still flows.
    """
    import gzip
    import zlib

    line = 0
    try:
        if _first_significant_byte(stream) == b"[":
            records = iter_json_array(stream, source, max_bytes)
        else:
            records = iter_jsonl(stream, source, max_bytes)
        for record in records:
            line = record.line
            yield record
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        yield RawRecord(source, line + 1, str(exc).encode()[:256], structural_error="invalid_gzip")


def iter_jsonl(
    stream: IO[bytes], source: str, max_bytes: int, first_line: int = 1
) -> Iterator[RawRecord]:
    line_no = first_line - 1
    while True:
        data = stream.readline(max_bytes + 1)
        if not data:
            return
        line_no += 1
        if len(data) > max_bytes and not data.endswith(b"\n"):
            head = data
            while data and not data.endswith(b"\n"):  # skip the rest of the long line
                data = stream.readline(_BLOCK_BYTES)
            yield RawRecord(source, line_no, head, oversize=True)
            continue
        data = data.strip()
        if line_no == 1 and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        if data:
            yield RawRecord(source, line_no, data)


_OUTSIDE = re.compile(rb'["\[\]{},]')
_INSIDE = re.compile(rb'["\\]')


def iter_json_array(stream: IO[bytes], source: str, max_bytes: int) -> Iterator[RawRecord]:
    """Split a top-level JSON array into element bytes without parsing the elements.

    Only strings and brackets are tracked, so one malformed element becomes one
    rejected record and the rest of the array still flows.
    """
    buf = b""
    pos = 0
    depth = 0  # 0: before '[', 1: between elements, >1: inside an element
    in_str = False
    escape_pending = False
    index = 0
    element = bytearray()
    oversize = False

    def take(upto: int) -> None:
        nonlocal oversize
        piece = buf[pos:upto]
        if len(element) + len(piece) > max_bytes:
            room = max(0, max_bytes + 1 - len(element))
            element.extend(piece[:room])
            oversize = True
        else:
            element.extend(piece)

    def emit() -> RawRecord | None:
        nonlocal element, oversize, index
        data = bytes(element).strip()
        element, was_oversize = bytearray(), oversize
        oversize = False
        if not data:
            return None
        index += 1
        return RawRecord(source, index, data, oversize=was_oversize)

    while True:
        if pos >= len(buf):
            buf, pos = stream.read(_BLOCK_BYTES), 0
            if not buf:
                break
        if depth == 0:
            start = buf.find(b"[", pos)
            if start < 0:
                pos = len(buf)
                continue
            depth, pos = 1, start + 1
            continue
        if escape_pending:
            take(pos + 1)
            pos, escape_pending = pos + 1, False
            continue
        pattern = _INSIDE if in_str else _OUTSIDE
        m = pattern.search(buf, pos)
        if m is None:
            take(len(buf))
            pos = len(buf)
            continue
        ch, at = m.group(), m.start()
        if in_str:
            if ch == b"\\":
                if at + 1 >= len(buf):  # the escaped byte is in the next block
                    take(len(buf))
                    pos, escape_pending = len(buf), True
                    continue
                take(at + 2)
                pos = at + 2
            else:
                take(at + 1)
                pos, in_str = at + 1, False
            continue
        if ch == b'"':
            take(at + 1)
            pos, in_str = at + 1, True
        elif ch in (b"[", b"{"):
            take(at + 1)
            pos, depth = at + 1, depth + 1
        elif ch in (b"]", b"}"):
            if depth == 1:  # end of the top-level array
                take(at)
                pos = at + 1
                if (rec := emit()) is not None:
                    yield rec
                rest = buf[pos:].strip() + stream.read(64).strip()
                if rest:
                    yield RawRecord(source, index + 1, rest[:256], structural_error="trailing_data")
                return
            take(at + 1)
            pos, depth = at + 1, depth - 1
        else:  # ','
            if depth == 1:
                take(at)
                pos = at + 1
                if (rec := emit()) is not None:
                    yield rec
            else:
                take(at + 1)
                pos = at + 1
    # EOF before the closing ']': what was read of the last element is kept.
    data = bytes(element).strip()
    if depth == 0:
        return
    yield RawRecord(source, index + 1, data[:max_bytes], oversize=oversize,
                    structural_error="unterminated_array")


def iter_source(
    spec: str, *, max_bytes: int, on_bytes: Callable[[int], None] = lambda n: None,
    open_store: Callable[[str], Any] | None = None,
) -> Iterator[RawRecord]:
    """Records from one SOURCE argument."""
    if spec == "-":
        raw = _CountingReader(sys.stdin.buffer, on_bytes)
        yield from iter_stream(_binary_stream(raw), "<stdin>", max_bytes)
        return
    if spec.startswith("s3://"):
        if open_store is None:
            raise ConfigError("s3:// sources need an object store factory")
        parts = urlsplit(spec)
        prefix = parts.path.lstrip("/")
        store = open_store(f"s3://{parts.netloc}")
        keys = [k for k in store.list(prefix) if not k.endswith("/")]
        for k in keys:
            raw = _CountingReader(store.open_read(k), on_bytes)
            yield from iter_stream(_binary_stream(raw), f"s3://{parts.netloc}/{k}", max_bytes)
        return
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"source {spec!r} is not a file, '-' or an s3:// prefix")
    with path.open("rb", buffering=0) as fh:
        raw = _CountingReader(fh, on_bytes)
        yield from iter_stream(_binary_stream(raw), str(path), max_bytes)


def source_sizes(specs: Iterable[str]) -> int | None:
    """Total bytes of local file sources, or None when any size is unknown."""
    total = 0
    for spec in specs:
        if spec == "-" or spec.startswith("s3://"):
            return None
        try:
            total += Path(spec).stat().st_size
        except OSError:
            return None
    return total
