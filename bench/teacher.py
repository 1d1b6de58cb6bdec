"""Teacher throughput and rate-limit accuracy against a local OpenAI-protocol server.

The server (tests/support/openai_server.py) answers every chat request after
``--latency-s`` (default 0.3 s). Real ``celery -A labelq.app.worker_app`` worker
processes do the work, on a private redis-server.

* rate limit: ``--rpm-workers`` processes at concurrency 64 against a global
  limit of ``--rpm`` requests per 60 s window, for ``--duration-s``. Measured
  where requests arrive: ``rpm_utilisation`` = requests in the first full
  60 s window after a 5 s warm-up / limit; ``rpm_overshoot`` = the worst
  sliding 60 s window / limit - 1 (0 when never over).
* labels/s: one worker process, concurrency 64, no rate limit, ``--n`` sessions.

    python bench/teacher.py --json                 # about 4 minutes
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emit, private_redis
from labelq.settings import Settings
from labelq.status import gather
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.openai_server import FakeConfig, FakeOpenAI
from tests.support.worker_procs import celery_workers, worker_env

WINDOW_S = 60.0


def _ingest(url: str, tmp: Path, n: int, chunk_size: int) -> Settings:
    tmp.mkdir(parents=True, exist_ok=True)
    settings = Settings(state_dir=tmp, redis_url=url, redis_key_prefix=f"b{uuid.uuid4().hex[:6]}:",  # type: ignore[arg-type]
                        store_url=f"file://{tmp / 'store'}", chunk_size=chunk_size)
    path = tmp / f"in-{n}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in generate(n, seed=n)))
    run_ingest(settings, [str(path)], queue="teacher")  # all of them: the routing policy would send most to students
    return settings


def bench_rpm(url: str, tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    n = int(args.rpm * (args.duration_s / WINDOW_S) * 1.5) + 200
    settings = _ingest(url, tmp, n, 64)
    with FakeOpenAI(FakeConfig(latency_s=args.latency_s)) as fake:
        env = worker_env(settings, LABELQ_TEACHER_BACKEND="openai", LABELQ_TEACHER_BASE_URL=fake.base_url,
                         LABELQ_TEACHER_API_KEY="sk-bench-not-a-real-key", LABELQ_TEACHER_RPM=str(args.rpm),
                         LABELQ_TEACHER_TPM=str(10**9), LABELQ_TEACHER_CONCURRENCY="64",
                         LABELQ_LOG_LEVEL="WARNING")
        with celery_workers(env, "teacher", args.rpm_workers, tmp):
            time.sleep(args.duration_s)
        times = sorted(r["t"] for r in fake.requests)
    worst = max(sum(1 for t in times[i:] if t < start + WINDOW_S) for i, start in enumerate(times))
    warm = times[0] + 5.0  # workers start at different moments; measure from 5 s in
    sustained = sum(1 for t in times if warm <= t < warm + WINDOW_S)
    return {"rpm_limit": args.rpm, "rpm_workers": args.rpm_workers,
            "rpm_sustained": sustained, "rpm_worst_window": worst,
            "rpm_utilisation": round(sustained / args.rpm, 3),
            "rpm_overshoot": round(max(0.0, worst / args.rpm - 1), 4)}


def bench_labels_per_s(url: str, tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    settings = _ingest(url, tmp, args.n, args.chunk_size)
    client = redis.Redis.from_url(url)
    with FakeOpenAI(FakeConfig(latency_s=args.latency_s)) as fake:
        env = worker_env(settings, LABELQ_TEACHER_BACKEND="openai", LABELQ_TEACHER_BASE_URL=fake.base_url,
                         LABELQ_TEACHER_API_KEY="sk-bench-not-a-real-key", LABELQ_TEACHER_RPM=str(10**7),
                         LABELQ_TEACHER_TPM=str(10**10), LABELQ_TEACHER_CONCURRENCY="64",
                         LABELQ_LOG_LEVEL="WARNING")
        with celery_workers(env, "teacher", 1, tmp):
            while not fake.requests:
                time.sleep(0.05)
            started = time.monotonic()
            while gather(settings, client).tasks["session-label"].labelled_teacher < args.n:
                time.sleep(0.1)
            elapsed = time.monotonic() - started
    return {"labels_per_s_per_process": round(args.n / elapsed, 1), "concurrency": 64,
            "chunk_size": args.chunk_size, "latency_s": args.latency_s,
            "ideal_labels_per_s": round(64 / args.latency_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-s", type=float, default=0.3)
    parser.add_argument("--rpm", type=int, default=1200, help="global requests per 60 s window")
    parser.add_argument("--rpm-workers", type=int, default=2, help="worker processes racing for the limit")
    parser.add_argument("--duration-s", type=float, default=130.0, help="length of the rate-limit run")
    parser.add_argument("-n", type=int, default=3000, help="sessions for the labels/s run")
    parser.add_argument("--chunk-size", type=int, default=256, help="sessions per chunk for the labels/s run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with private_redis() as url, tempfile.TemporaryDirectory() as tmp:
        result = bench_labels_per_s(url, Path(tmp) / "a", args)
        result |= bench_rpm(url, Path(tmp) / "b", args)
    emit(result, args.json)


if __name__ == "__main__":
    main()
