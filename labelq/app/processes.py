"""Worker child processes (Celery workers, the trainer service), started and stopped one way (the demo and
the tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO


def start_celery_worker(queue: str, *, pool: str, concurrency: int, name: str, env: dict[str, str],
                        log: IO[bytes], cwd: Path | None = None,
                        app: str = "labelq.app.worker_app") -> subprocess.Popen[bytes]:
    """``celery -A <app> worker`` (labelq.app.worker_app unless told) for one queue, in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue, "-P", pool,
         "-c", str(concurrency), "-n", name, "--without-mingle", "--without-gossip", "--loglevel=WARNING"],
        env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_trainer_service(*, env: dict[str, str], log: IO[bytes], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """``labelq trainer run`` (what compose and Kubernetes run: curation when due, training, the promotion gate
    and the live-quality monitor, every ``LABELQ_TRAINER_POLL_S``), in its own process group."""
    return subprocess.Popen([sys.executable, "-m", "labelq.app.cli.main", "trainer", "run"], env=env, cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process_groups(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM every group (a warm shutdown), then SIGKILL what is still there after ``timeout_s``."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
