"""Shared benchmark plumbing: a private redis-server, cached synthetic inputs, JSON output."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import redis

from labelq.redis_server import find_redis_server, free_port, redis_config_lines

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "results" / "cache"


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server on a free port in a temp dir (AOF off: we time labelq, not the disk)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "redis.conf"
        lines = [ln for ln in redis_config_lines(Path(tmp), port, None) if not ln.startswith("append")]
        conf.write_text("\n".join([*lines, "appendonly no"]) + "\n")
        proc = subprocess.Popen([find_redis_server(), str(conf)], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            for _ in range(200):
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def synthetic_file(n: int, seed: int = 0) -> Path:
    """A JSONL file of ``n`` synthetic sessions, cached between runs."""
    from labelq.synth import generate

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"sessions-{n}-{seed}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            for s in generate(n, seed):
                fh.write(orjson.dumps(s) + b"\n")
        tmp.replace(path)
    return path


def emit(result: dict[str, Any], as_json: bool) -> None:
    if not as_json:
        for k, v in result.items():
            print(f"{k:32s} {v}", file=sys.stderr)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
