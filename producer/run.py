"""One call that wires a producer run together (used by the CLI, tests and benchmarks).

A large local JSONL file is cut into byte ranges (``producer.split``) and each
range runs the whole producer (validate, claim, publish) in its own process,
so no record crosses a process boundary. Dedupe stays exact (claims are
atomic in Redis), dead letters keep their true line numbers, and the
summaries are added up. Gzip, JSON arrays, stdin and ``s3://`` sources stream
through one process.

``stop`` (the CLI sets it on SIGTERM) ends a run early and cleanly: each
process finishes the batch it is enqueueing, leaves what it has not claimed
(see :mod:`producer.ingest`), and the summary says ``stopped``. The parent
passes its stop on to the range processes through a shared event; each range
process also stops on its own SIGTERM, and on Linux gets one when its parent
dies (SIGKILL included), so none ingests on as an orphan.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import redis

from labelq.deadletter import DeadLetterSink
from labelq.queue.app import QueueApp, create_app
from labelq.queue.publish import ChunkPublisher
from labelq.redis_server import connect, resolve_redis_url
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.stopping import SharedEvent, StopFlag, set_on_sigterm
from labelq.store import ObjectStore, open_store
from producer.ingest import Ingestor, IngestSummary
from producer.routing import FixedRouter, Router, default_router
from producer.sources import RawRecord, iter_source
from producer.split import ByteRange, iter_range, plan_ranges

_progress: Synchronized[int] | None = None  # bytes read, shared by the range processes
_stop: StopFlag | None = None  # set to stop this range process
_parent_pid = 0


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
    stop: StopFlag | None = None,
) -> IngestSummary:
    """Ingest an iterable of raw records in this process."""
    client = client or connect(settings)
    store = store or open_store(settings)
    app = app or create_app(settings, broker_url=resolve_redis_url(settings))
    dead_letters = DeadLetterSink(settings, store, client, stage="ingest")
    with ChunkPublisher(settings, app, client, on_pause=on_pause, stop=stop) as publisher:
        ingestor = Ingestor(settings, publisher, dead_letters, router, task=task, on_record=on_record,
                            stop=stop, payload_store=store)
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
    stop: StopFlag | None = None,
) -> IngestSummary:
    """Ingest ``sources`` for ``task``; raises ServiceUnavailable/ConfigError on operational failure.

    An unknown task is refused (ConfigError listing the known ones) before any
    input is read: otherwise every chunk would fail in the workers.
    Large local JSONL files are split by byte range across ``ingest_processes``;
    everything else streams through this process. Once ``stop`` is set, the
    run ends as soon as it cleanly can and later sources are not read.
    """
    started = time.monotonic()
    task = task or settings.default_task
    load_spec(task, settings.specs_dir)
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
                           store=store, on_record=on_record, on_pause=on_pause, stop=stop)
        total.add(part)
        specs.clear()

    for spec in sources:
        total.stopped = total.stopped or (stop is not None and stop.is_set())
        if total.stopped:
            break
        local = spec != "-" and not spec.startswith("s3://") and Path(spec).is_file()
        ranges = plan_ranges(Path(spec), settings.ingest_processes,
                             settings.ingest_split_min_bytes) if local else None
        if ranges is None:
            streamed.append(spec)
            continue
        stream(streamed)  # keep source order: earlier small sources first
        if total.stopped:
            break
        part = ingest_ranges(settings, ranges, task=task, router=router, on_bytes=on_bytes, stop=stop)
        total.add(part)
    if not total.stopped:
        stream(streamed)
    total.elapsed_s = time.monotonic() - started
    return total


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


def _init_worker(counter: Synchronized[int], parent_stop: SharedEvent, parent_pid: int) -> None:
    global _progress, _stop, _parent_pid
    stop = StopFlag(parent_stop)
    _progress, _stop, _parent_pid = counter, stop, parent_pid
    # Orphaned, a range process exits on SIGTERM: nobody takes its summary or sends another range. Safe: a
    # chunk and its claims move in one Redis step.
    set_on_sigterm(stop, exit_if_orphaned_of=parent_pid)
    if sys.platform == "linux":
        # SIGTERM this process when its parent dies. Linux sends it each time a thread of
        # the parent that holds this process exits: first the thread that started it (the
        # main thread: ProcessPoolExecutor starts its processes from the thread that submits)
        # while the others may still run (getppid unchanged: stop, keep what is in hand), and
        # again when the last one goes (getppid changed: exit, see set_on_sigterm).
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent_pid:  # the parent died before prctl
            stop.set()


def _count_bytes(n: int) -> None:
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += n


def _ingest_range(settings: Settings, rng: ByteRange, task: str, router: Router) -> IngestSummary:
    records = iter_range(rng, settings.max_session_bytes, on_bytes=_count_bytes)
    summary = run_records(settings, records, task=task, router=router, stop=_stop)
    if os.getppid() != _parent_pid:  # orphaned: nobody takes the summary or ever ends this process
        os._exit(0)
    return summary


def ingest_ranges(
    settings: Settings, ranges: list[ByteRange], *, task: str, router: Router,
    on_bytes: Callable[[int], None], stop: StopFlag | None = None,
) -> IngestSummary:
    """Run each range in its own process; return the added-up counts. ``stop`` is passed on."""
    context = start_context()
    counter: Synchronized[int] = context.Value("q", 0)
    shared_stop = context.Event()  # set here, by this loop: never from a signal handler
    total = IngestSummary()
    reported = 0
    with ProcessPoolExecutor(len(ranges), mp_context=context, initializer=_init_worker,
                             initargs=(counter, shared_stop, os.getpid())) as pool:
        futures = [pool.submit(_ingest_range, settings, rng, task, router) for rng in ranges]
        while not all(f.done() for f in futures):
            time.sleep(0.2)
            if stop is not None and stop.is_set():
                shared_stop.set()
            now = counter.get_obj().value  # without its lock: killed holding it, the ranges would wait for ever
            on_bytes(now - reported)
            reported = now
        on_bytes(counter.get_obj().value - reported)
        for future in futures:
            total.add(future.result())  # re-raises a range's ServiceUnavailable here
    return total
