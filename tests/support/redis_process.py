"""A real redis-server on a free port, started and stopped (or killed) by a test."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from labelq.redis_server import find_redis_server, free_port, redis_config_lines


class RedisProcess:
    """A redis-server with labelq's own config in ``data_dir``; restarted, it keeps its port and data."""

    def __init__(self, data_dir: Path, password: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.password = password
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        conf.write_text("\n".join(redis_config_lines(self.data_dir, self.port, self.password)) + "\n")
        self.proc = subprocess.Popen(
            [find_redis_server(), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = None
