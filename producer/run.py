"""One call that wires a producer run together (used by the CLI, tests and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import redis

from labelq.deadletter import DeadLetterSink
from labelq.queue.app import QueueApp, create_app
from labelq.queue.publish import ChunkPublisher
from labelq.redis_server import connect, resolve_redis_url
from labelq.settings import Settings
from labelq.store import ObjectStore, open_store
from producer.ingest import Ingestor, IngestSummary
from producer.routing import FixedRouter, Router, default_router
from producer.sources import RawRecord, iter_source
from producer.split import ingest_ranges, plan_ranges


def run_records(
    settings: Settings,
    records: Iterable[RawRecord],
    *,
    task: str,
    router: Router,
    client: redis.Redis | None = None,
    app: QueueApp | None = None,
    store: ObjectStore | None = None,
    on_record: Callable[[IngestSummary], None] | None = None,
    on_pause: Callable[[str, int], None] | None = None,
) -> IngestSummary:
    """Ingest an iterable of raw records in this process."""
    client = client or connect(settings)
    store = store or open_store(settings)
    app = app or create_app(settings, broker_url=resolve_redis_url(settings))
    dead_letters = DeadLetterSink(settings, store, client, stage="ingest")
    with ChunkPublisher(settings, app, client, on_pause=on_pause) as publisher:
        ingestor = Ingestor(settings, publisher, dead_letters, router, task=task, on_record=on_record)
        return ingestor.run(records)


def run_ingest(
    settings: Settings,
    sources: Sequence[str],
    *,
    task: str | None = None,
    queue: str | None = None,
    router: Router | None = None,
    client: redis.Redis | None = None,
    app: QueueApp | None = None,
    store: ObjectStore | None = None,
    on_record: Callable[[IngestSummary], None] | None = None,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_pause: Callable[[str, int], None] | None = None,
) -> IngestSummary:
    """Ingest ``sources`` for ``task``; raises ServiceUnavailable/ConfigError on operational failure.

    Large local JSONL files are split by byte range across ``ingest_processes``;
    everything else streams through this process.
    """
    started = time.monotonic()
    task = task or settings.default_task
    router = router or (FixedRouter(queue) if queue else default_router(settings))
    client = client or connect(settings)
    total = IngestSummary()
    streamed: list[str] = []

    def stream(specs: list[str]) -> None:
        if not specs:
            return

        def records() -> Iterator[RawRecord]:
            for spec in specs:
                yield from iter_source(
                    spec, max_bytes=settings.max_session_bytes, on_bytes=on_bytes,
                    open_store=lambda url: open_store(settings, url),
                )

        part = run_records(settings, records(), task=task, router=router, client=client, app=app,
                           store=store, on_record=on_record, on_pause=on_pause)
        total.add(part)
        specs.clear()

    for spec in sources:
        local = spec != "-" and not spec.startswith("s3://") and Path(spec).is_file()
        ranges = plan_ranges(Path(spec), settings.ingest_processes,
                             settings.ingest_split_min_bytes) if local else None
        if ranges is None:
            streamed.append(spec)
            continue
        stream(streamed)  # keep source order: earlier small sources first
        part = ingest_ranges(settings, ranges, task=task, router=router, on_bytes=on_bytes)
        total.add_counts(part)
    stream(streamed)
    total.elapsed_s = time.monotonic() - started
    return total
