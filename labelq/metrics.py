"""Prometheus metrics of a worker, served on ``LABELQ_METRICS_PORT`` (off when unset).

Only ids-free labels: stage, task, model, backend, queue. No session content,
no session ids, no keys ever become a label value.

* ``labelq_labels_total{stage,task}``            labels written (rate() gives labels/s)
* ``labelq_dead_letters_total{stage,task}``      sessions dead-lettered by workers
* ``labelq_escalations_total{task}``             student labels sent back to the teacher
* ``labelq_chunk_retries_total{stage,kind}``     chunks put back: ``paused`` or ``failed``
* ``labelq_chunk_seconds{stage}``                time per chunk (histogram)
* ``labelq_batch_sessions{stage}``               sessions per chunk = per engine call (histogram)
* ``labelq_engine_seconds{backend}``             student engine time per chunk (histogram)
* ``labelq_teacher_usd_total{task,model}``, ``labelq_teacher_tokens_total{task,model,kind}``
* ``labelq_student_usd_total{task}``             engine seconds x ``LABELQ_STUDENT_GPU_USD_PER_HOUR``
* ``labelq_adapter_version{task}``               adapter version the student serves
* ``labelq_queue_depth{queue}``                  chunks waiting, read from Redis at scrape time

Prefork workers (the teacher) share one endpoint through prometheus_client's
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set before any metric exists.
Without the ``ops`` extra every call here is a no-op.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from labelq.logging import get_logger
from labelq.outcomes import ChunkOutcome
from labelq.settings import Settings

log = get_logger(__name__)


def prepare_multiprocess(settings: Settings) -> None:
    """Call in the worker's main process before prometheus_client is imported anywhere."""
    if settings.metrics_port is None or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    folder = Path(settings.state_dir) / "metrics" / str(os.getpid())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # imported already (Celery loads Flower's CLI plugin, which imports it)
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.labels = Counter("labelq_labels_total", "Labels written.", ["stage", "task"])
        self.dead = Counter("labelq_dead_letters_total", "Sessions dead-lettered by workers.", ["stage", "task"])
        self.escalations = Counter("labelq_escalations_total", "Student labels escalated to the teacher.",
                                   ["task"])
        self.retries = Counter("labelq_chunk_retries_total", "Chunks put back on their queue.", ["stage", "kind"])
        self.chunk_seconds = Histogram("labelq_chunk_seconds", "Seconds per chunk.", ["stage"],
                                       buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900))
        self.batch = Histogram("labelq_batch_sessions", "Sessions per chunk (one engine call for students).",
                               ["stage"], buckets=(1, 8, 16, 32, 64, 128, 256, 512, 1024, 4096))
        self.engine = Histogram("labelq_engine_seconds", "Student engine seconds per chunk.", ["backend"],
                                buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60))
        self.teacher_usd = Counter("labelq_teacher_usd_total", "Teacher spend in USD.", ["task", "model"])
        self.teacher_tokens = Counter("labelq_teacher_tokens_total", "Teacher tokens.", ["task", "model", "kind"])
        self.student_usd = Counter("labelq_student_usd_total",
                                   "Student cost in USD: engine seconds x LABELQ_STUDENT_GPU_USD_PER_HOUR.", ["task"])
        self.adapter = Gauge("labelq_adapter_version", "Adapter version served.", ["task"],
                             multiprocess_mode="mostrecent")


_METRICS: _Metrics | None = None
_DISABLED = False


def metrics() -> _Metrics | None:
    global _METRICS, _DISABLED
    if _METRICS is None and not _DISABLED:
        try:
            _METRICS = _Metrics()
        except ImportError:
            _DISABLED = True
    return _METRICS


def observe_chunk(stage: str, task: str, sessions: int, seconds: float, outcome: ChunkOutcome) -> None:
    m = metrics()
    if m is None:
        return
    m.chunk_seconds.labels(stage).observe(seconds)
    m.batch.labels(stage).observe(sessions)
    if outcome.labelled:
        m.labels.labels(stage, task).inc(outcome.labelled)
    if outcome.dead_lettered:
        m.dead.labels(stage, task).inc(outcome.dead_lettered)
    if outcome.escalated:
        m.escalations.labels(task).inc(outcome.escalated)
    student = outcome.student
    if student is not None:
        if student.backend:
            m.engine.labels(student.backend).observe(student.engine_s)
        if student.student_usd:
            m.student_usd.labels(task).inc(student.student_usd)
        if student.adapter_version is not None:
            m.adapter.labels(task).set(student.adapter_version)
    teacher = outcome.teacher
    if teacher is not None and teacher.model:
        m.teacher_usd.labels(task, teacher.model).inc(teacher.usd)
        m.teacher_tokens.labels(task, teacher.model, "input").inc(teacher.input_tokens)
        m.teacher_tokens.labels(task, teacher.model, "output").inc(teacher.output_tokens)


def observe_retry(stage: str, kind: str) -> None:
    m = metrics()
    if m is not None:
        m.retries.labels(stage, kind).inc()


class QueueDepthCollector:
    """``labelq_queue_depth{queue}`` read from Redis when scraped."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        from labelq.queue.inspect import queue_depths
        from labelq.redis_server import connect

        family = GaugeMetricFamily("labelq_queue_depth", "Chunks waiting in a queue.", labels=["queue"])
        for queue, depth in queue_depths(self._settings, connect(self._settings)).items():
            family.add_metric([queue], float(depth))
        yield family


def serve(settings: Settings) -> int | None:
    """Start the endpoint in this (the worker's main) process; the port, or None when off."""
    if settings.metrics_port is None:
        return None
    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector
    except ImportError:
        log.warning("metrics_unavailable", detail="install labelq[ops] for the Prometheus endpoint")
        return None
    registry = CollectorRegistry()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        MultiProcessCollector(registry)
    registry.register(QueueDepthCollector(settings))
    try:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    except OSError as exc:  # the worker still works; say clearly why it has no endpoint
        log.error("metrics_not_served", port=settings.metrics_port, error=exc.strerror or str(exc),
                  detail="another process holds the port: give each worker its own LABELQ_METRICS_PORT")
        return None
    log.info("metrics_serving", port=settings.metrics_port)
    return settings.metrics_port
