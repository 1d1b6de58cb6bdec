"""Real Celery worker processes for tests: started with `celery -A labelq.app.worker_app`."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labelq.app.processes import start_celery_worker, stop_process_groups
from labelq.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELQ_", "OPENAI_"))}
    env.update({
        "LABELQ_STATE_DIR": str(settings.state_dir),
        "LABELQ_REDIS_URL": settings.redis_url.get_secret_value() if settings.redis_url else "",
        "LABELQ_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "LABELQ_STORE_URL": settings.effective_store_url,
        "LABELQ_TEACHER_BACKEND": settings.teacher_backend,  # replay runs only when chosen
        "LABELQ_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra)
    return env


class Fleet:
    """Real ``celery worker`` processes, started, SIGKILLed and restarted one at a time."""

    def __init__(self, env: dict[str, str], log_dir: Path, app: str = "labelq.app.worker_app") -> None:
        self.env = env
        self.log_dir = log_dir
        self.app = app
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.kills: Counter[str] = Counter()
        self._logs: list[Any] = []

    def start(self, queue: str, *, pool: str = "solo", concurrency: int = 1,
              **extra_env: str) -> subprocess.Popen[bytes]:
        n = len(self.procs.get(queue, []))
        log = (self.log_dir / f"{queue}-{n}.log").open("wb")
        self._logs.append(log)
        proc = start_celery_worker(queue, pool=pool, concurrency=concurrency, name=f"{queue}{n}@%h",
                                   env={**self.env, **extra_env}, log=log, cwd=ROOT, app=self.app)
        self.procs.setdefault(queue, []).append(proc)
        return proc

    def live(self, queue: str) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs.get(queue, []) if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes], queue: str) -> None:
        """SIGKILL the worker and every process it started (pool children, engine processes)."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.kills[queue] += 1

    def logs(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.log_dir.glob("*.log")))

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process_groups([p for ps in self.procs.values() for p in ps], timeout_s=20)
        for log in self._logs:
            log.close()


@contextmanager
def celery_workers(env: dict[str, str], queue: str, count: int, log_dir: Path,
                   pool: str = "solo", concurrency: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    with Fleet(env, log_dir) as fleet:
        yield [fleet.start(queue, pool=pool, concurrency=concurrency) for _ in range(count)]
