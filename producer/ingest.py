"""``labelq ingest``: sources -> validate -> dedupe -> route -> chunk -> publish.

Every record read is counted exactly once as enqueued, duplicate or rejected
(``read = enqueued + duplicates + sum(rejected)``); rejected records go to the
dead-letter store with source, line, reason and the truncated raw bytes.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from labelq.deadletter import DeadLetterSink, truncate_raw
from labelq.hashing import chunk_id
from labelq.queue.publish import OutgoingChunk
from labelq.schemas import DeadLetter, chunk_json
from labelq.settings import Settings
from producer.routing import Router
from producer.sources import RawRecord
from producer.validate import Accepted, Limits, Rejected, validate


class ChunkOutlet(Protocol):
    """Where the ingestor's chunks go: the queues (``ChunkPublisher``), or a list in
    this process (``producer.local.LocalChunks``, for ``labelq teach``)."""

    paused_s: float

    def claim(self, task: str, hashes: Sequence[str]) -> list[bool]: ...

    def release(self, task: str, hashes: Sequence[str]) -> None: ...

    def publish_many(self, chunks: Sequence[tuple[str, OutgoingChunk]]) -> None: ...

    def count(self, task: str, *, ingested: int, duplicates: int) -> None: ...


def rejection_letter(record: RawRecord, result: Rejected, task: str, raw_max_bytes: int) -> DeadLetter:
    """The dead-letter record of one rejected input: where it came from, why, its head."""
    raw, truncated = truncate_raw(record.data, raw_max_bytes)
    return DeadLetter(reason=result.reason, detail=result.detail, stage="ingest", task=task,
                      source=record.source, line=record.line, raw=raw,
                      raw_truncated=truncated or record.oversize)


@dataclass
class IngestSummary:
    read: int = 0
    enqueued: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    chunks: int = 0
    queues: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    backpressure_paused_s: float = 0.0

    def add(self, other: IngestSummary) -> None:
        """Fold another run's counts into this one (several sources, several processes)."""
        self.read += other.read
        self.enqueued += other.enqueued
        self.duplicates += other.duplicates
        self.rejected.update(other.rejected)
        self.chunks += other.chunks
        self.queues.update(other.queues)
        self.backpressure_paused_s += other.backpressure_paused_s

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def sessions_per_s(self) -> float | None:
        return round(self.read / self.elapsed_s, 1) if self.elapsed_s else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "enqueued": self.enqueued,
            "duplicates": self.duplicates,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": self.rejected_total,
            "chunks": self.chunks,
            "queues": dict(self.queues),
            "elapsed_s": round(self.elapsed_s, 3),
            "sessions_per_s": self.sessions_per_s,
            "backpressure_paused_s": round(self.backpressure_paused_s, 3),
        }


class Ingestor:
    """Streams records into chunks for one task. Use as a context manager per run."""

    def __init__(
        self, settings: Settings, publisher: ChunkOutlet, dead_letters: DeadLetterSink,
        router: Router, *, task: str, on_record: Callable[[IngestSummary], None] | None = None,
    ) -> None:
        self._settings = settings
        self._publisher = publisher
        self._dlq = dead_letters
        self._router = router
        self._task = task
        self._limits = Limits.from_settings(settings)
        self._buffers: dict[tuple[str, str], dict[str, Accepted]] = {}
        # A batch always fits between the low- and high-water marks of backpressure.
        self._batch_chunks = max(1, min(
            settings.publish_batch_chunks,
            settings.queue_high_water_chunks - settings.queue_low_water_chunks,
        ))
        # Full chunks waiting to be claimed and published together.
        self._ready: list[tuple[str, str, list[Accepted]]] = []
        self._on_record = on_record
        self.summary = IngestSummary()

    def run(self, records: Iterable[RawRecord]) -> IngestSummary:
        started = time.monotonic()
        try:
            for record in records:
                self.add(record)
            self.flush_all()
        finally:
            self._dlq.flush()
            self.summary.elapsed_s = time.monotonic() - started
            self.summary.backpressure_paused_s = self._publisher.paused_s
        return self.summary

    def add(self, record: RawRecord) -> None:
        self.summary.read += 1
        result = validate(record, self._limits)
        if isinstance(result, Rejected):
            self._reject(record, result)
        else:
            queue, route = self._router.route(self._task, result)
            buffer = self._buffers.setdefault((queue, route), {})
            if result.content_hash in buffer:
                self.summary.duplicates += 1
            else:
                buffer[result.content_hash] = result
                if len(buffer) >= self._settings.chunk_size:
                    self._ready.append((queue, route, list(self._buffers.pop((queue, route)).values())))
                    if len(self._ready) >= self._batch_chunks:
                        self._publish_ready()
        if self._on_record is not None:
            self._on_record(self.summary)

    def _reject(self, record: RawRecord, result: Rejected) -> None:
        self.summary.rejected[result.reason] += 1
        self._dlq.add(rejection_letter(record, result, self._task, self._settings.dead_letter_raw_max_bytes))

    def flush_all(self) -> None:
        for (queue, route), buffer in self._buffers.items():
            self._ready.append((queue, route, list(buffer.values())))
        self._buffers.clear()
        self._publish_ready()

    def _publish_ready(self) -> None:
        """Claim every ready chunk's sessions at once, publish the fresh ones, count."""
        ready, self._ready = self._ready, []
        hashes = [s.content_hash for _, _, sessions in ready for s in sessions]
        flags = iter(self._publisher.claim(self._task, hashes))
        outgoing: list[tuple[str, OutgoingChunk]] = []
        claimed: list[str] = []
        for queue, route, sessions in ready:
            fresh = [s for s in sessions if next(flags)]
            if fresh:
                claimed.extend(s.content_hash for s in fresh)
                triples = [(s.session_id, s.content_hash, s.raw) for s in fresh]
                cid = chunk_id(self._task, (s.content_hash for s in fresh))
                outgoing.append((queue, OutgoingChunk(
                    chunk_id=cid, task=self._task, sessions=len(fresh),
                    body=chunk_json(self._task, route, triples, cid),
                )))
        dupes = len(hashes) - len(claimed)
        if outgoing:
            try:
                self._publisher.publish_many(outgoing)
            except BaseException:
                with contextlib.suppress(Exception):  # Redis may be the thing that failed
                    self._publisher.release(self._task, claimed)
                raise
            self.summary.chunks += len(outgoing)
            for queue, chunk in outgoing:
                self.summary.queues[queue] += chunk.sessions
        if hashes:
            self._publisher.count(self._task, ingested=len(claimed), duplicates=dupes)
        self.summary.enqueued += len(claimed)
        self.summary.duplicates += dupes
