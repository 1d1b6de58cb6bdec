"""The producer without queues: sources validated, deduplicated and chunked like
``labelq ingest`` does, the chunks kept in this process (``labelq teach`` labels
them itself).

Rejected records go to the dead-letter store with their reason, as in an
ingest run; payloads stay inline whatever their size (no queue holds them); duplicates are caught within the run (the sessions are not
marked as ingested, so a later ``labelq ingest`` still takes them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import redis

from labelq.deadletter import DeadLetterSink
from labelq.queue.publish import OutgoingChunk
from labelq.schemas import ChunkMessage
from labelq.settings import Settings
from labelq.store import ObjectStore, open_store
from producer.ingest import Ingestor, IngestSummary
from producer.routing import FixedRouter
from producer.sources import RawRecord, iter_source


class LocalChunks:
    """A chunk outlet that keeps the chunks in a list."""

    paused_s = 0.0  # nothing to wait for

    def __init__(self) -> None:
        self.chunks: list[ChunkMessage] = []
        self._seen: set[str] = set()

    def unseen(self, task: str, hashes: Sequence[str]) -> list[bool]:
        return [h not in self._seen for h in hashes]

    def wait_for_chunks(self, chunks: Sequence[tuple[str, OutgoingChunk]], task: str) -> None:
        return None  # a list has room

    def enqueue(self, task: str, chunks: Sequence[tuple[str, OutgoingChunk]], hashes: Sequence[str],
                *, duplicates: int = 0) -> set[str]:
        self._seen.update(hashes)  # nothing is counted: nothing was ingested into the queues
        self.chunks.extend(ChunkMessage.decode(chunk.body) for _, chunk in chunks)
        return set()


def read_chunks(settings: Settings, sources: Sequence[str], *, task: str, route: str,
                store: ObjectStore, client: redis.Redis) -> tuple[list[ChunkMessage], IngestSummary]:
    """The chunks of ``sources`` for ``task`` (every session on ``route``), and the run's counts."""

    def records() -> Iterator[RawRecord]:
        for spec in sources:
            yield from iter_source(spec, max_bytes=settings.max_session_bytes,
                                   open_store=lambda url: open_store(settings, url))

    outlet = LocalChunks()
    dead_letters = DeadLetterSink(settings, store, client, stage="ingest")
    ingestor = Ingestor(settings, outlet, dead_letters, FixedRouter("teacher", route), task=task)
    summary = ingestor.run(records())
    return outlet.chunks, summary
