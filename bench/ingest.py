"""Ingest throughput, side by side in one run against one private redis-server.

* ours:   ``labelq ingest`` (validate, hash, dedupe claim, chunk, Celery publish, backpressure)
* raw:    read the same file, parse each line, pack the same chunk dicts, serialize and
          LPUSH them with a redis-py pipeline (no validation, no dedupe, no Celery): the floor
* naive:  one Celery task per session via ``send_task`` (what a user writes by hand),
          timed on the first ``--naive-n`` sessions, rate extrapolated
* memory: peak memory of ``labelq ingest`` (PSS summed over its process tree) on a
          1,000,000-session file

    python bench/ingest.py --json            # all of it (about 5 minutes on 2 cores)
    python bench/ingest.py --json --rss-n 0  # skip the 1M-session RSS run
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import CACHE, emit, private_redis, synthetic_file
from labelq.queue.app import TEACHER_TASK, create_app
from labelq.schemas import chunk_wire
from labelq.settings import Settings
from producer.run import run_ingest


def bench_ours(url: str, path: Path, tmp: Path) -> float:
    settings = Settings(state_dir=tmp, redis_url=url, redis_key_prefix=f"ours{uuid.uuid4().hex[:6]}:",  # type: ignore[arg-type]
                        store_url=f"file://{tmp / 'store'}", queue_high_water_chunks=10**9,
                        queue_high_water_bytes=1 << 62)  # no worker drains: backpressure would stop the run
    started = time.perf_counter()
    summary = run_ingest(settings, [str(path)])
    elapsed = time.perf_counter() - started
    assert summary.enqueued == summary.read, summary
    return elapsed


def bench_raw(url: str, path: Path, chunk_size: int) -> float:
    client = redis.Redis.from_url(url)
    key = f"raw{uuid.uuid4().hex[:6]}:teacher"
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    batch: list[tuple[str, str, dict]] = []  # type: ignore[type-arg]
    with path.open("rb") as fh:
        for line in fh:
            obj = orjson.loads(line)
            batch.append((obj["session_id"], "", obj))
            if len(batch) == chunk_size:
                pipe.lpush(key, orjson.dumps(chunk_wire("session-label", "seed", batch)))
                batch = []
                if len(pipe) >= 100:
                    pipe.execute()
    if batch:
        pipe.lpush(key, orjson.dumps(chunk_wire("session-label", "seed", batch)))
    pipe.execute()
    return time.perf_counter() - started


def bench_naive(url: str, path: Path, n: int) -> float:
    settings = Settings(redis_url=url, redis_key_prefix=f"naive{uuid.uuid4().hex[:6]}:")  # type: ignore[arg-type]
    app = create_app(settings, broker_url=url)
    started = time.perf_counter()
    with path.open("rb") as fh, app.producer_pool.acquire(block=True) as producer:
        for i, line in enumerate(fh):
            if i == n:
                break
            app.send_task(TEACHER_TASK, args=[orjson.loads(line)], queue="teacher", producer=producer)
    return time.perf_counter() - started


def million_file(base: Path, n: int) -> Path:
    """``n`` sessions with distinct ids, made by re-stamping a cached 100k file."""
    path = CACHE / f"sessions-{n}-restamped.jsonl"
    if path.exists():
        return path
    lines = base.read_bytes().splitlines()
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        for i in range(n):
            line = lines[i % len(lines)]
            fh.write(line.replace(b'"session_id":"s', f'"session_id":"r{i // len(lines)}-s'.encode(), 1) + b"\n")
    tmp.replace(path)
    return path


def bench_rss(url: str, path: Path, tmp: Path) -> tuple[float, dict]:  # type: ignore[type-arg]
    """Peak memory of ``labelq ingest`` and its range processes, sampled every 20 ms.

    Summed PSS (proportional set size): forked children share their parent's
    pages copy-on-write, and summing RSS would count those pages once per process.
    """
    import psutil

    env = {**os.environ, "LABELQ_REDIS_URL": url, "LABELQ_STATE_DIR": str(tmp),
           "LABELQ_STORE_URL": f"file://{tmp / 'store-rss'}", "LABELQ_REDIS_KEY_PREFIX": "rss:",
           "LABELQ_QUEUE_HIGH_WATER_CHUNKS": str(10**9), "LABELQ_QUEUE_HIGH_WATER_BYTES": str(1 << 62)}
    proc = subprocess.Popen([sys.executable, "-m", "labelq.app.cli.main", "ingest", str(path), "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_full_info().pss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    out = proc.stdout.read() if proc.stdout else b""
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed with exit status {proc.returncode}")
    return peak / (1 << 20), orjson.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="sessions for the throughput runs")
    parser.add_argument("--naive-n", type=int, default=10_000, help="sessions for the naive per-session run")
    parser.add_argument("--rss-n", type=int, default=1_000_000, help="sessions for the RSS run (0: skip)")
    parser.add_argument("--repeat", type=int, default=5, help="alternating ours/raw pairs (median reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()

    path = synthetic_file(args.n)
    chunk_size = Settings().chunk_size
    with private_redis() as url, tempfile.TemporaryDirectory() as tmp:
        bench_raw(url, path, chunk_size)  # warm the page cache for everyone
        # Alternate ours and raw so both see the same machine; report medians and the spread.
        ours, raw = [], []
        for _ in range(args.repeat):
            ours.append(bench_ours(url, path, Path(tmp)))
            raw.append(bench_raw(url, path, chunk_size))
        ratios = sorted(r / o for o, r in zip(ours, raw, strict=True))
        ours_s, raw_s = statistics.median(ours), statistics.median(raw)
        naive_s = bench_naive(url, path, args.naive_n)
        naive_rate = min(args.n, args.naive_n) / naive_s
        result = {
            "sessions": args.n,
            "chunk_size": chunk_size,
            "ingest_processes": Settings().ingest_processes,
            "repeats": args.repeat,
            "sessions_per_s": round(args.n / ours_s, 1),
            "raw_pipeline_sessions_per_s": round(args.n / raw_s, 1),
            "celery_per_session_sessions_per_s": round(naive_rate, 1),
            "ratio_vs_raw_pipeline": round(statistics.median(ratios), 3),
            "ratio_vs_raw_pipeline_range": [round(ratios[0], 3), round(ratios[-1], 3)],
            "ratio_vs_celery_per_session": round((args.n / ours_s) / naive_rate, 2),
        }
        if args.rss_n:
            rss_mb, summary = bench_rss(url, million_file(path, args.rss_n), Path(tmp))
            result.update({"rss_sessions": args.rss_n, "peak_rss_mb": round(rss_mb, 1),
                           "peak_rss_measure": "PSS summed over the ingest process tree",
                           "rss_run_sessions_per_s": summary["sessions_per_s"]})
    emit(result, args.json)


if __name__ == "__main__":
    main()
