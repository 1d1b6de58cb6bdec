"""Real Celery worker processes for tests: started with `celery -A labelq.worker_app`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labelq.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELQ_", "OPENAI_"))}
    env.update({
        "LABELQ_STATE_DIR": str(settings.state_dir),
        "LABELQ_REDIS_URL": settings.redis_url.get_secret_value() if settings.redis_url else "",
        "LABELQ_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "LABELQ_STORE_URL": settings.effective_store_url,
        "LABELQ_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra)
    return env


@contextmanager
def celery_workers(env: dict[str, str], queue: str, count: int, log_dir: Path,
                   pool: str = "solo", concurrency: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    logs = []
    for i in range(count):
        log = (log_dir / f"{queue}-{i}.log").open("wb")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "labelq.worker_app", "worker", "-Q", queue,
             "-P", pool, "-c", str(concurrency), "-n", f"{queue}{i}@%h", "--without-mingle",
             "--without-gossip", "--loglevel=WARNING"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in logs:
            log.close()
