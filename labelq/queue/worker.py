"""Running workers: the app a worker process serves, and in-process workers for tests and benchmarks.

A worker process's app (:func:`create_worker_app`) reads its broker URL only
when Celery first reads its configuration, so ``celery ... --help`` starts
no embedded Redis; its metrics endpoint starts with the worker (``worker_init``),
in the main process, so prefork children share it. Which modules register
tasks on it is the caller's business (the app layer names the stage packages).
Stages hook the worker's start (:func:`check_at_worker_start`) and each worker
process's exit (:func:`on_worker_exit`) here, without importing Celery.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from celery import Celery
from celery.signals import task_prerun, worker_init, worker_process_shutdown, worker_shutdown

from labelq.errors import ConfigError
from labelq.logging import get_logger
from labelq.metrics import serve
from labelq.queue.app import celery_config, use_orjson_for_json
from labelq.redis_server import resolve_redis_url
from labelq.settings import Settings

log = get_logger(__name__)


class _LazyConfig:
    """Celery reads this object on first access to ``app.conf``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._values: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._values is None:
            self._values = celery_config(self._settings, resolve_redis_url(self._settings))
        return self._values

    def __dir__(self) -> list[str]:
        return list(self._load())

    def __getattr__(self, name: str) -> Any:
        try:
            return self._load()[name]
        except KeyError:
            raise AttributeError(name) from None


def create_worker_app(settings: Settings) -> Celery:
    """The app ``celery -A ... worker`` runs: configured lazily, serving metrics once the worker starts."""
    use_orjson_for_json()
    app = Celery("labelq", set_as_current=False)
    app.config_from_object(_LazyConfig(settings))
    app.conf.labelq_settings = settings

    @worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _serve_metrics(**_: Any) -> None:
        serve(settings)

    return app


def check_at_worker_start(app: Celery, queue: str, check: Callable[[Settings], None]) -> None:
    """Run ``check(settings)`` when a worker of ``app`` that consumes ``queue`` starts (before it takes a
    message); a ConfigError stops that worker with its message, naming the setting to fix (exit status 1).

    Other workers of the same app (``-Q student``) never run it: a student does not need a teacher key.
    """

    @worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _check(sender: Any = None, **_: Any) -> None:
        if sender is None or sender.app is not app:  # sender: the WorkController; other apps' workers too
            return
        if queue not in sender.app.amqp.queues.consume_from:  # -Q, else every configured queue
            return
        try:
            check(sender.app.conf.labelq_settings)
        except ConfigError as exc:
            log.error("worker_refused", queue=queue, reason=str(exc))
            # SystemExit: Celery logs and swallows an Exception raised by a signal handler.
            raise SystemExit(f"the {queue} worker cannot start: {exc}") from None


def on_worker_exit(callback: Callable[[], object]) -> None:
    """Call ``callback`` in a worker process as it exits: each prefork child (which ends without
    running atexit handlers), and the main process of a solo pool. Connected once per callback."""
    uid = f"labelq-exit-{callback.__module__}.{callback.__qualname__}"

    def _exit(**_: Any) -> None:
        callback()

    worker_process_shutdown.connect(_exit, weak=False, dispatch_uid=uid)
    worker_shutdown.connect(_exit, weak=False, dispatch_uid=uid)


@contextlib.contextmanager
def worker_thread(app: Celery, queues: Sequence[str], shutdown_timeout_s: float = 10) -> Iterator[None]:
    """A solo-pool worker for ``queues`` in a thread of this process, for tests."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(app, pool="solo", perform_ping_check=False, queues=list(queues),
                      shutdown_timeout=shutdown_timeout_s):
        yield


def run_worker(app: Celery, queues: Sequence[str], hostname: str) -> None:
    """A solo-pool worker in this process until it is stopped (SIGTERM: a warm shutdown)."""
    # redirect_stdouts off: the caller's own stdout (a benchmark's --json line) stays stdout.
    worker = app.Worker(queues=list(queues), pool="solo", concurrency=1, without_mingle=True,
                        without_gossip=True, without_heartbeat=True, loglevel="WARNING", hostname=hostname,
                        redirect_stdouts=False)
    with contextlib.suppress(SystemExit):
        worker.start()


def on_task_start(callback: Callable[[], object]) -> None:
    """Call ``callback`` in the worker each time it starts running a task."""

    @task_prerun.connect(weak=False)  # type: ignore[untyped-decorator]
    def _started(**_: Any) -> None:
        callback()
