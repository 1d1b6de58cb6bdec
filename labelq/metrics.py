"""Prometheus metrics of a worker, served on ``LABELQ_METRICS_PORT`` (off when unset).

The endpoint listens on 127.0.0.1 unless ``LABELQ_METRICS_HOST`` says otherwise, and asks for
basic auth (``LABELQ_METRICS_USER`` / ``LABELQ_METRICS_PASSWORD``) when a password is set; a
non-loopback host without a password is refused by the settings unless
``LABELQ_METRICS_ALLOW_UNAUTHENTICATED`` is set.

Only ids-free labels: stage, task, model, backend, queue. No session content,
no session ids, no keys ever become a label value.

* ``labelq_labels_total{stage,task}``            labels written (rate() gives labels/s)
* ``labelq_dead_letters_total{stage,task}``      sessions dead-lettered by workers
* ``labelq_escalations_total{task}``             student labels sent back to the teacher
* ``labelq_chunk_retries_total{stage,kind}``     chunks put back: ``paused``, ``failed`` (poison),
                                                 ``outage`` or ``configuration``; or ``parked``
* ``labelq_waiting_since_seconds{stage,on}``     unix time a stage began to wait on ``on`` (redis, store,
                                                 provider, engine, configuration); 0 once it works again
* ``labelq_chunk_seconds{stage}``                time per chunk (histogram)
* ``labelq_batch_sessions{stage}``               sessions per chunk = per engine call (histogram)
* ``labelq_engine_seconds{backend}``             student engine time per chunk (histogram)
* ``labelq_teacher_usd_total{task,model}``, ``labelq_teacher_tokens_total{task,model,kind}``
* ``labelq_student_usd_total{task}``             engine seconds x ``LABELQ_STUDENT_GPU_USD_PER_HOUR``
* ``labelq_adapter_version{task}``               adapter version the student serves
* ``labelq_queue_depth{queue}``                  chunks waiting, read from Redis at scrape time: work that
                                                 can be done (what KEDA scales on)
* ``labelq_parked_chunks{task}``                 student chunks parked off the queue until the task has an
                                                 adapter (``labelq.queue.parking``), read at scrape time
* ``labelq_redis_memory_bytes``, ``labelq_redis_maxmemory_bytes``  Redis's used memory and its ceiling
                                                 (0: none), read at scrape time; producers pause above
                                                 ``LABELQ_REDIS_MEMORY_HIGH_WATER`` of the ceiling
* ``labelq_redis_memory_reserve_bytes``          the reserve held for workers to drain a full Redis
* ``labelq_agreement_pairs{task,version}``, ``labelq_agreement_exact{task,version}``,
  ``labelq_agreement_cosine{task,version}``, ``labelq_agreement_within{task,version}``
                                                 live student-teacher agreement of the serving version in
                                                 its judged window (``labelq.agreement``), read at scrape
                                                 time from the trainer monitor's last verdict
* ``labelq_quality_degraded{task}``              1 while the drift alarm marks the task degraded, else 0

Prefork workers (the teacher) share one endpoint through prometheus_client's
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set before any metric exists.
Without the ``ops`` extra every call here is a no-op.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis

from labelq import keyspace
from labelq.errors import LabelqError
from labelq.logging import get_logger
from labelq.outcomes import ChunkOutcome
from labelq.redis_memory import read_memory
from labelq.settings import Settings, is_loopback

log = get_logger(__name__)
WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


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
        self.waiting = Gauge("labelq_waiting_since_seconds",
                             "Unix time the stage began to wait on a dependency or on configuration; 0: working.",
                             ["stage", "on"], multiprocess_mode="mostrecent")


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


def observe_waiting(stage: str, on: str, since: float) -> None:
    """``stage`` waits on ``on`` since ``since`` (unix time); ``since`` 0: it works again."""
    m = metrics()
    if m is not None:
        m.waiting.labels(stage, on).set(since)


class QueueDepthCollector:
    """``labelq_queue_depth{queue}``, ``labelq_parked_chunks{task}`` and Redis memory, read from Redis when
    scraped, over one small pool per process.

    The pool is made on the first scrape and kept: a scrape costs four round trips (the queues' ``LLEN``,
    the task registry, the parked lists' ``LLEN``, then ``INFO memory`` with the reserve's ``STRLEN``),
    never a new connection (at most
    ``MAX_REDIS_CONNECTIONS`` however many scrapes run at once). When Redis does not answer the
    families are empty for that scrape and the other metrics are still served.
    """

    MAX_REDIS_CONNECTIONS = 2
    REDIS_CLIENT_NAME = "labelq-metrics"  # how its connections show in CLIENT LIST

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()

    def _redis(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                from labelq.redis_server import resolve_redis_url

                pool = redis.BlockingConnectionPool.from_url(
                    resolve_redis_url(self._settings), max_connections=self.MAX_REDIS_CONNECTIONS, timeout=10,
                    socket_timeout=10, health_check_interval=30, client_name=self.REDIS_CLIENT_NAME)
                self._client = redis.Redis(connection_pool=pool)
            return self._client

    def read(self) -> tuple[dict[str, int], dict[str, int]]:
        """Queue depths by queue, parked chunks by task (tasks with none left out)."""
        from labelq.queue.inspect import queue_depths
        from labelq.queue.parking import parked_depths
        from labelq.task_registry import known_tasks

        client = self._redis()
        return (queue_depths(self._settings, client),
                parked_depths(self._settings, client, known_tasks(self._settings, client)))

    def read_quality(self) -> dict[str, Any]:
        """The agreement monitor's last verdict per task (``labelq.agreement.QualityState``)."""
        from labelq.agreement import read_states
        from labelq.task_registry import known_tasks

        client = self._redis()
        return read_states(self._settings, client, known_tasks(self._settings, client))

    def _quality_families(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            states = self.read_quality()
        except (redis.RedisError, LabelqError) as exc:
            log.warning("metrics_agreement_unavailable", error=type(exc).__name__)
            return []
        figures = {name: GaugeMetricFamily(f"labelq_agreement_{name}", text, labels=["task", "version"])
                   for name, text in (("pairs", "Student-teacher pairs scored in the judged window."),
                                      ("exact", "Share of pairs whose labels match after normalisation."),
                                      ("cosine", "Mean cosine of the pairs' label embeddings."),
                                      ("within", "Share of shadow answers within the output contract."))}
        degraded = GaugeMetricFamily("labelq_quality_degraded", "1 while the drift alarm marks the task degraded.",
                                     labels=["task"])
        for task, state in states.items():
            q = state.status()
            degraded.add_metric([task], float(q.degraded))
            if q.version is None or q.window_start is None:
                continue
            labels = [task, str(q.version)]
            figures["pairs"].add_metric(labels, float(q.n))
            for name, value in (("exact", q.exact), ("cosine", q.cosine), ("within", q.within)):
                if value is not None:
                    figures[name].add_metric(labels, float(value))
        return [*figures.values(), degraded]

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("labelq_queue_depth", "Chunks waiting in a queue (work that can be done).",
                                   labels=["queue"])
        parked = GaugeMetricFamily("labelq_parked_chunks", "Student chunks parked until the task has an adapter.",
                                   labels=["task"])
        memory = None
        try:
            depths, parked_by_task = self.read()
        except (redis.RedisError, LabelqError) as exc:
            log.warning("metrics_queue_depth_unavailable", error=type(exc).__name__)
            depths, parked_by_task = {}, {}
        else:
            try:
                memory = read_memory(self._redis(), keyspace.memory_reserve(self._settings))
            except (redis.RedisError, LabelqError) as exc:  # the depths read above are still served
                log.warning("metrics_redis_memory_unavailable", error=type(exc).__name__)
        for queue, depth in depths.items():
            family.add_metric([queue], float(depth))
        for task, n in parked_by_task.items():
            parked.add_metric([task], float(n))
        yield family
        yield parked
        if memory is not None:
            yield GaugeMetricFamily("labelq_redis_memory_bytes", "Memory Redis uses (INFO used_memory).",
                                    value=memory.used_bytes)
            yield GaugeMetricFamily("labelq_redis_maxmemory_bytes", "Redis's memory ceiling (maxmemory; 0: none).",
                                    value=memory.max_bytes)
            yield GaugeMetricFamily("labelq_redis_memory_reserve_bytes",
                                    "Memory held in reserve for workers to drain a full Redis.",
                                    value=memory.reserve_bytes)
        if depths:  # Redis answered this scrape
            yield from self._quality_families()


def require_basic_auth(app: WSGIApp, user: str, password: str) -> WSGIApp:
    """``app`` behind HTTP basic auth: 401 with a challenge unless the request carries ``user:password``."""
    want_user, want_password = user.encode(), password.encode()

    def authorised(header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        given_user, colon, given_password = given.partition(b":")
        # Both compared in constant time, always both: no timing hint about which one was wrong.
        same_user = hmac.compare_digest(given_user, want_user)
        same_password = hmac.compare_digest(given_password, want_password)
        return bool(colon) and same_user and same_password

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        if authorised(environ.get("HTTP_AUTHORIZATION", "")):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="labelq metrics"'),
                                            ("Content-Type", "text/plain; charset=utf-8")])
        return [b"401 Unauthorized: this endpoint needs basic auth (LABELQ_METRICS_USER/_PASSWORD)\n"]

    return guarded


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def start_server(app: WSGIApp, host: str, port: int) -> WSGIServer:
    """Serve ``app`` on ``host:port`` (IPv4 or IPv6) from a daemon thread; the server, for its bound port."""
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class Server(_ThreadingServer):
        address_family = family

    server: WSGIServer = make_server(host, port, app, Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="labelq-metrics", daemon=True).start()
    return server


def serve(settings: Settings) -> int | None:
    """Start the endpoint in this (the worker's main) process; the port, or None when off.

    It listens on ``LABELQ_METRICS_HOST`` (127.0.0.1 unless set) and asks for basic auth when
    ``LABELQ_METRICS_PASSWORD`` is set; settings refuse a non-loopback host without a password
    unless ``LABELQ_METRICS_ALLOW_UNAUTHENTICATED`` says so.
    """
    if settings.metrics_port is None:
        return None
    try:
        from prometheus_client import CollectorRegistry, make_wsgi_app
        from prometheus_client.multiprocess import MultiProcessCollector
    except ImportError:
        log.warning("metrics_unavailable", detail="install labelq[ops] for the Prometheus endpoint")
        return None
    registry = CollectorRegistry()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        MultiProcessCollector(registry)
    registry.register(QueueDepthCollector(settings))
    app: WSGIApp = make_wsgi_app(registry)
    password = settings.metrics_password
    if password is not None:
        app = require_basic_auth(app, settings.metrics_user, password.get_secret_value())
    elif not is_loopback(settings.metrics_host):  # allowed by LABELQ_METRICS_ALLOW_UNAUTHENTICATED
        log.warning("metrics_unauthenticated", host=settings.metrics_host,
                    detail="anyone who reaches this address reads the metrics: set LABELQ_METRICS_PASSWORD")
    try:
        start_server(app, settings.metrics_host, settings.metrics_port)
    except OSError as exc:  # the worker still works; say clearly why it has no endpoint
        log.error("metrics_not_served", port=settings.metrics_port, error=exc.strerror or str(exc),
                  detail="another process holds the port: give each worker its own LABELQ_METRICS_PORT")
        return None
    log.info("metrics_serving", host=settings.metrics_host, port=settings.metrics_port,
             basic_auth=password is not None)
    return settings.metrics_port
