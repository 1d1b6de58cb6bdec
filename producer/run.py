"""One call that wires a producer run together (used by the CLI, tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import redis
from celery import Celery

from labelq.celery_app import create_app
from labelq.deadletter import DeadLetterSink
from labelq.redis_server import connect, resolve_redis_url
from labelq.settings import Settings
from labelq.store import ObjectStore, open_store
from producer.ingest import Ingestor, IngestSummary
from producer.publisher import ChunkPublisher
from producer.routing import FixedRouter, Router, default_router
from producer.sources import RawRecord, iter_source


def run_ingest(
    settings: Settings,
    sources: Sequence[str],
    *,
    task: str | None = None,
    queue: str | None = None,
    router: Router | None = None,
    client: redis.Redis | None = None,
    app: Celery | None = None,
    store: ObjectStore | None = None,
    on_record: Callable[[IngestSummary], None] | None = None,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_pause: Callable[[str, int], None] | None = None,
) -> IngestSummary:
    """Ingest ``sources`` for ``task``; raises ServiceUnavailable/ConfigError on operational failure."""
    task = task or settings.default_task
    router = router or (FixedRouter(queue) if queue else default_router())
    client = client or connect(settings)
    store = store or open_store(settings)
    app = app or create_app(settings, broker_url=resolve_redis_url(settings))

    def records() -> Iterator[RawRecord]:
        for spec in sources:
            yield from iter_source(
                spec, max_bytes=settings.max_session_bytes, on_bytes=on_bytes,
                open_store=lambda url: open_store(settings, url),
            )

    dead_letters = DeadLetterSink(settings, store, client, stage="ingest")
    with ChunkPublisher(settings, app, client, on_pause=on_pause) as publisher:
        ingestor = Ingestor(settings, publisher, dead_letters, router, task=task, on_record=on_record)
        return ingestor.run(records())
