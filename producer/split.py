"""Ingest one large local JSONL file on several cores, by byte range.

The file is cut at line starts into ``processes`` ranges; each range runs the
whole producer (validate, claim, publish) in its own process, so no record
crosses a process boundary. Dedupe stays exact (claims are atomic in Redis),
dead letters keep their true line numbers (the parent counts newlines up to
each cut), and the summaries are added up. Gzip, JSON arrays, stdin and
``s3://`` sources stream through one process.
"""

from __future__ import annotations

import io
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from producer.sources import GZIP_MAGIC, RawRecord, iter_jsonl

_COUNT_BLOCK_BYTES = 8 << 20
_progress: Synchronized[int] | None = None  # bytes read, shared by the range processes


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
    def __init__(self, path: str, start: int, end: int) -> None:
        self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._fh.seek(start)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self._left)]
        n = self._fh.readinto(view) or 0
        self._left -= n
        if _progress is not None:
            with _progress.get_lock():
                _progress.value += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def iter_range(rng: ByteRange, max_bytes: int) -> Iterator[RawRecord]:
    with io.BufferedReader(_RangeReader(rng.path, rng.start, rng.end), buffer_size=1 << 20) as stream:
        yield from iter_jsonl(stream, rng.path, max_bytes, first_line=rng.first_line)


def start_context() -> Any:
    """``fork`` when this process has no other thread, else ``spawn``.

    fork skips re-importing labelq in each child (~0.5 s each, a large share of
    a 100 MB file's time), but a forked child inherits whatever locks other
    threads held (a progress bar's refresh thread, say), so with threads we
    pay for spawn.
    """
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _init_worker(counter: Synchronized[int]) -> None:
    global _progress
    _progress = counter


def _ingest_range(settings: Any, rng: ByteRange, task: str, router: Any) -> dict[str, Any]:
    from producer.run import run_records

    summary = run_records(settings, iter_range(rng, settings.max_session_bytes), task=task, router=router)
    return {"read": summary.read, "enqueued": summary.enqueued, "duplicates": summary.duplicates,
            "rejected": dict(summary.rejected), "chunks": summary.chunks, "queues": dict(summary.queues),
            "paused": summary.backpressure_paused_s}


def ingest_ranges(
    settings: Any, ranges: list[ByteRange], *, task: str, router: Any,
    on_bytes: Callable[[int], None],
) -> dict[str, Any]:
    """Run each range in its own process; return the added-up counts."""
    context = start_context()
    counter: Synchronized[int] = context.Value("q", 0)
    total: dict[str, Any] = {"read": 0, "enqueued": 0, "duplicates": 0, "rejected": Counter(),
                             "chunks": 0, "queues": Counter(), "paused": 0.0}
    reported = 0
    with ProcessPoolExecutor(len(ranges), mp_context=context, initializer=_init_worker,
                             initargs=(counter,)) as pool:
        futures = [pool.submit(_ingest_range, settings, rng, task, router) for rng in ranges]
        while not all(f.done() for f in futures):
            time.sleep(0.2)
            now = counter.value
            on_bytes(now - reported)
            reported = now
        on_bytes(counter.value - reported)
        for future in futures:
            part = future.result()  # re-raises a range's ServiceUnavailable here
            for name in ("read", "enqueued", "duplicates", "chunks", "paused"):
                total[name] += part[name]
            total["rejected"].update(part["rejected"])
            total["queues"].update(part["queues"])
    return total
