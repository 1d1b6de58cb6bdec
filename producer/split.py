"""Line-aligned byte ranges of one large local JSONL file, and reading one range.

The file is cut at line starts into ``processes`` ranges, each with the line
number it starts at (the parent counts newlines up to each cut), so a range
read on its own yields records with their true line numbers. Gzip and JSON
arrays cannot be cut: ``plan_ranges`` says to stream those. Running the
ranges (one producer per process) is ``producer.run``'s job.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.sources import GZIP_MAGIC, RawRecord, iter_jsonl

_COUNT_BLOCK_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class ByteRange:
    path: str
    start: int
    end: int
    first_line: int


def plan_ranges(path: Path, processes: int, min_bytes: int) -> list[ByteRange] | None:
    """Cut points at line starts, or None when the file should stream in one process."""
    size = path.stat().st_size
    if processes <= 1 or size < min_bytes:
        return None
    with path.open("rb") as fh:
        head = fh.read(4096)
        if head[:2] == GZIP_MAGIC or head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"[":
            return None
        cuts = [0]
        for i in range(1, processes):
            fh.seek(size * i // processes)
            fh.readline()  # move to the start of the next line
            if fh.tell() > cuts[-1] and fh.tell() < size:
                cuts.append(fh.tell())
        cuts.append(size)
        # Line number at each cut: one streaming pass of newline counting.
        lines_before = [0]
        fh.seek(0)
        pos, newlines = 0, 0
        for cut in cuts[1:-1]:
            while pos < cut:
                block = fh.read(min(_COUNT_BLOCK_BYTES, cut - pos))
                newlines += block.count(b"\n")
                pos += len(block)
            lines_before.append(newlines)
    return [ByteRange(str(path), cuts[i], cuts[i + 1], lines_before[i] + 1)
            for i in range(len(cuts) - 1)]


class _RangeReader(io.RawIOBase):
    def __init__(self, path: str, start: int, end: int, on_bytes: Callable[[int], None] | None) -> None:
        self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._fh.seek(start)
        self._left = end - start
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self._left)]
        n = self._fh.readinto(view) or 0
        self._left -= n
        if self._on_bytes is not None:
            self._on_bytes(n)
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def iter_range(rng: ByteRange, max_bytes: int,
               on_bytes: Callable[[int], None] | None = None) -> Iterator[RawRecord]:
    """The records of one range; ``on_bytes`` hears of every block read (progress)."""
    reader = _RangeReader(rng.path, rng.start, rng.end, on_bytes)
    with io.BufferedReader(reader, buffer_size=1 << 20) as stream:
        yield from iter_jsonl(stream, rng.path, max_bytes, first_line=rng.first_line)
