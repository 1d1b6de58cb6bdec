"""Real Celery worker processes for tests: started with `celery -A labelq.worker_app`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labelq.processes import start_celery_worker, stop_process_groups
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
        procs.append(start_celery_worker(queue, pool=pool, concurrency=concurrency, name=f"{queue}{i}@%h",
                                         env=env, log=log, cwd=ROOT))
    try:
        yield procs
    finally:
        stop_process_groups(procs, timeout_s=20)
        for log in logs:
            log.close()
