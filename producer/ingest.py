"""``labelq ingest``: sources -> validate -> dedupe -> route -> chunk -> publish.

Every record read is counted exactly once as enqueued, duplicate, rejected or
left (``read = enqueued + duplicates + sum(rejected) + left``); rejected records
go to the dead-letter store with source, line, reason and the truncated raw
bytes. ``left`` is 0 unless the run was asked to stop (SIGTERM): then the
sessions read but not yet enqueued are left, unclaimed, for a re-run.

A session counts as seen only once its chunk is in a queue: a batch of ready
chunks is checked against the dedupe set (read only), waits for room (chunks
and bytes), has its large payloads written to the store (claim check, see
:mod:`labelq.payloads`), and is then claimed, pushed and counted in one atomic
step (see :mod:`labelq.queue.publish`). Nothing is claimed while the producer
waits, so a producer stopped or killed at any point and run again on the same
sources enqueues every session exactly once (a payload written before a kill
is written again, to the same key, by the next run).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from labelq.deadletter import DeadLetterSink, truncate_raw
from labelq.errors import Stopped
from labelq.hashing import chunk_id
from labelq.keyspace import payload as payload_key
from labelq.payloads import check_in, claim_checked
from labelq.queue.publish import OutgoingChunk, message_bytes
from labelq.schemas import SHADOW_ROUTE, DeadLetter, PayloadRef, chunk_json
from labelq.settings import Settings
from labelq.stopping import StopFlag
from labelq.store import ObjectStore
from producer.routing import Router
from producer.sources import RawRecord
from producer.validate import Accepted, Limits, Rejected, validate


class ChunkOutlet(Protocol):
    """Where the ingestor's chunks go: the queues (``ChunkPublisher``), or a list in
    this process (``producer.local.LocalChunks``, for ``labelq teach``)."""

    paused_s: float

    def unseen(self, task: str, hashes: Sequence[str]) -> list[bool]: ...

    def wait_for_chunks(self, chunks: Sequence[tuple[str, OutgoingChunk]], task: str) -> None: ...

    def enqueue(self, task: str, chunks: Sequence[tuple[str, OutgoingChunk]], hashes: Sequence[str],
                *, duplicates: int = 0) -> set[str]: ...


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
    left: int = 0  # read, not enqueued: the run was asked to stop
    stopped: bool = False
    shadowed: int = 0  # sample sessions also sent to students as shadow chunks (not in queues/chunks)

    def add(self, other: IngestSummary) -> None:
        """Fold another run's counts into this one (several sources, several processes)."""
        self.read += other.read
        self.left += other.left
        self.stopped = self.stopped or other.stopped
        self.enqueued += other.enqueued
        self.duplicates += other.duplicates
        self.rejected.update(other.rejected)
        self.chunks += other.chunks
        self.queues.update(other.queues)
        self.backpressure_paused_s += other.backpressure_paused_s
        self.shadowed += other.shadowed

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
            "left": self.left,
            "stopped": self.stopped,
            "shadowed": self.shadowed,
        }


class Ingestor:
    """Streams records into chunks for one task, one run per instance.

    ``stop`` (set on SIGTERM) ends the run early: the batch being enqueued is
    finished, one waiting for room or for Redis is left, as are the chunks
    not yet full; the summary says ``stopped`` and counts them as ``left``.

    With ``payload_store`` (the queues' producer), a session larger than
    ``claim_check_bytes`` goes to that store and its chunk carries a reference;
    without it (chunks kept in this process) every payload stays inline.
    """

    def __init__(
        self, settings: Settings, publisher: ChunkOutlet, dead_letters: DeadLetterSink,
        router: Router, *, task: str, on_record: Callable[[IngestSummary], None] | None = None,
        stop: StopFlag | None = None, payload_store: ObjectStore | None = None,
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
        # ... and between the byte marks (as estimated before the batch is built).
        self._batch_bytes = settings.queue_high_water_bytes - settings.queue_low_water_bytes
        self._payloads = payload_store
        # Full chunks waiting to be claimed and published together, and their estimated bytes in Redis.
        self._ready: list[tuple[str, str, list[Accepted]]] = []
        self._ready_bytes = 0
        self._on_record = on_record
        self._stop = stop
        self.summary = IngestSummary()

    def run(self, records: Iterable[RawRecord]) -> IngestSummary:
        started = time.monotonic()
        try:
            for record in records:
                # Every 256 records: a multiprocessing event's is_set takes a lock.
                if self._stop is not None and not self.summary.read & 255 and self._stop.is_set():
                    raise Stopped("asked to stop")
                self.add(record)
            self.flush_all()
        except Stopped:
            self.summary.stopped = True
            self.summary.left = (sum(len(b) for b in self._buffers.values())
                                 + sum(len(sessions) for _, _, sessions in self._ready))
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
                    sessions = list(self._buffers.pop((queue, route)).values())
                    self._ready.append((queue, route, sessions))
                    self._ready_bytes += message_bytes(sum(self._carried(s) for s in sessions))
                    if len(self._ready) >= self._batch_chunks or self._ready_bytes >= self._batch_bytes:
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

    def _checked(self, session: Accepted) -> bool:
        """Whether the session's payload goes to the store (its message carries a reference)."""
        return self._payloads is not None and claim_checked(self._settings, len(session.raw))

    def _carried(self, session: Accepted) -> int:
        """About what the session adds to its chunk's JSON: its payload, or a reference."""
        return 160 + (0 if self._checked(session) else len(session.raw))

    def _publish_ready(self) -> None:
        """Enqueue the ready chunks' fresh sessions: look, wait for room (chunks and bytes), write the
        large payloads to the store, then claim and push in one step (a conflict with another producer
        drops its sessions and tries again)."""
        ready = self._ready
        self._ready_bytes = 0
        hashes = [s.content_hash for _, _, sessions in ready for s in sessions]
        if not hashes:
            return
        known = {h for h, new in zip(hashes, self._publisher.unseen(self._task, hashes), strict=True) if not new}
        shadow = any(route == "sample" for _, route, _ in ready) and self._router.shadows(self._task)
        outgoing, fresh = self._chunks(ready, known, shadow)
        self._publisher.wait_for_chunks(outgoing, self._task)
        if self._payloads is not None:  # before the transaction: no reference is ever queued before its object
            fresh_set = set(fresh)
            large = {s.content_hash: s.raw for _, _, sessions in ready for s in sessions
                     if s.content_hash in fresh_set and self._checked(s)}
            check_in(self._payloads, self._task, list(large.items()))
        while taken := self._publisher.enqueue(self._task, outgoing, fresh, duplicates=len(hashes) - len(fresh)):
            known |= taken
            outgoing, fresh = self._chunks(ready, known, shadow)
        self._ready = []
        for queue, chunk in outgoing:
            if chunk.shadow:
                self.summary.shadowed += chunk.sessions
                continue
            self.summary.chunks += 1
            self.summary.queues[queue] += chunk.sessions
        self.summary.enqueued += len(fresh)
        self.summary.duplicates += len(hashes) - len(fresh)

    def _chunks(self, ready: list[tuple[str, str, list[Accepted]]], known: set[str],
                shadow: bool = False) -> tuple[list[tuple[str, OutgoingChunk]], list[str]]:
        """The chunks of the sessions not in ``known`` (each hash once), and their hashes. With ``shadow``,
        each teacher-sample chunk has a twin on the student queue (``route=shadow``, its own id), pushed and
        claimed in the same step: the sessions are claimed once, by the teacher's chunk."""
        taken = set(known)
        outgoing: list[tuple[str, OutgoingChunk]] = []
        fresh: list[str] = []
        for queue, route, sessions in ready:
            new = []
            for s in sessions:
                if s.content_hash not in taken:
                    taken.add(s.content_hash)
                    new.append(s)
            if new:
                fresh.extend(s.content_hash for s in new)
                triples: list[tuple[str, str, bytes | PayloadRef]] = [
                    (s.session_id, s.content_hash,
                     PayloadRef(payload_key(self._task, s.content_hash)) if self._checked(s) else s.raw)
                    for s in new]
                cid = chunk_id(self._task, (s.content_hash for s in new))
                outgoing.append((queue, OutgoingChunk(
                    chunk_id=cid, task=self._task, sessions=len(new),
                    body=chunk_json(self._task, route, triples, cid),
                )))
                if shadow and queue == "teacher" and route == "sample":
                    twin = chunk_id(self._task, (s.content_hash for s in new), parent=f"{SHADOW_ROUTE}:{cid}")
                    outgoing.append(("student", OutgoingChunk(
                        chunk_id=twin, task=self._task, sessions=len(new),
                        body=chunk_json(self._task, SHADOW_ROUTE, triples, twin), shadow=True)))
        return outgoing, fresh
