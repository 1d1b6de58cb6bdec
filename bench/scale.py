"""Scale (issue 15): what export and curation cost as the label history grows.

One local store grows through ``--sizes`` labels (ascending). Synthetic teacher label records go
straight into it with a bulk writer: per chunk of 64, the label object, the inputs object and the
write-log entry that teacher workers leave (``labelq/records.py``), through no worker, Redis or fsync,
on a virtual clock 10 s per chunk apart; 5% of the records relabel an earlier session. At each size:

* **export**: ``labelq export`` in a subprocess, all labels to JSONL: its peak RSS (``VmHWM`` of that
  process, read as it exits) and seconds (the whole command, its start included). ``export_rss_ratio``: peak RSS at the largest size over the
  smallest (goal <= 1.2).
* **curation**: the history is curated first, bucket by bucket as the trainer would have done
  (``history_curation_s``, not a goal), then ``--new`` (1,000) new labels are written and the next
  bucket is curated in a subprocess (what ``labelq curate`` runs): the seconds of the ``curate`` call
  (timed in that process: its interpreter start is not curation), the process's peak RSS and the
  labels read (must be ``--new``); ``--repeat`` (3) such buckets one after the other, the median
  seconds and the largest peak RSS.
  ``curation_s_ratio``: seconds at the largest history over the smallest (goal <= 1.5).
* **training set**: the trainer's read of that bucket's selection (``read_training_set``) in a
  subprocess: rows and peak RSS (bounded by ``LABELQ_CURATION_MAX_ROWS``, not by history).

Two more sections come from their own files, their keys merged into the JSON (``--no-hooks`` skips them):
``bench/_scale_redis.py`` (``redis_bytes_per_session``, at the largest size) and ``bench/_scale_ops.py``
(``status_redis_commands``, ``audit_redis_commands``, on a million keys of history).

    python bench/scale.py --json                            # 100k, 300k, 1M labels (~25 min on 2 cores, ~6 GB disk)
    python bench/scale.py --json --sizes 100000,300000      # the two smaller sizes
    python bench/scale.py --json --sizes 5000,20000         # a quick run
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, emit
from labelq import keyspace
from labelq.spec import load_spec
from labelq.store import LocalStore
from labelq.synth import generate
from trainer.curation import curate

TASK = "session-label"
CHUNK = 64
RELABEL_SHARE = 0.05
LABELS = ("Searches running shoes and pays by card", "Browses gift cards and leaves", "Buys a phone case",
          "Compares two laptops and saves one", "Signs up for the newsletter", "Returns an order online")
CLI_MODULE = "labelq.app.cli.main"  # `labelq`
# What ``labelq curate`` runs, timed inside its own process (the interpreter's start is not curation).
CURATE = f"""
import sys, time, orjson
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.store import open_store
from trainer.curation import curate
settings = Settings()
store, spec = open_store(settings), load_spec({TASK!r}, settings.specs_dir)
started = time.perf_counter()
manifest = curate(store, spec, max_rows=settings.curation_max_rows, lag_s=settings.curation_watermark_lag_s)
seconds = time.perf_counter() - started
sys.stdout.write(orjson.dumps({{"seconds": seconds, **manifest.summary()}}).decode())
"""


class BulkWriter:
    """Teacher chunks laid out in a local store as workers leave them, as fast as files can be written."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.sessions = [orjson.dumps(s) for s in generate(4096, seed=seed)]  # payloads, cycled
        self.clock = datetime(2026, 1, 1, tzinfo=UTC)
        self.labels = 0  # records written
        self.distinct = 0  # sessions labelled
        self.chunks = 0

    def _put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def write(self, n: int) -> None:
        for start in range(0, n, CHUNK):
            self._chunk(min(CHUNK, n - start))

    def _chunk(self, n: int) -> None:
        self.clock += timedelta(seconds=10)
        created = self.clock.isoformat()
        chunk_id = f"bulk{self.chunks:08d}"
        self.chunks += 1
        labels, inputs = [], []
        for _ in range(n):
            if self.distinct and self.rng.random() < RELABEL_SHARE:
                index = self.rng.randrange(self.distinct)  # a later label of an earlier session
            else:
                index, self.distinct = self.distinct, self.distinct + 1
            session_id = f"bulk-{index:09d}"
            content_hash = hashlib.blake2b(session_id.encode(), digest_size=16).hexdigest()
            label = LABELS[index % len(LABELS)]
            labels.append(orjson.dumps({
                "v": 1, "session_id": session_id, "content_hash": content_hash, "task": TASK, "label": label,
                "source": "teacher", "model": "gpt-4o", "adapter_version": None, "prompt_version": "bench",
                "confidence": None, "words": len(label.split()), "input_tokens": 412, "output_tokens": 9,
                "cost_usd": 0.00112, "latency_ms": 812.5, "chunk_id": chunk_id, "created_at": created, "flags": []}))
            payload = self.sessions[index % len(self.sessions)]
            inputs.append(b'{"session_id":"' + session_id.encode() + b'","content_hash":"' + content_hash.encode()
                          + b'","payload":' + payload + b"}")
        self._put(keyspace.inputs("teacher", TASK, chunk_id), b"\n".join(inputs) + b"\n")
        self._put(keyspace.labels("teacher", TASK, chunk_id), b"\n".join(labels) + b"\n")
        self._put(keyspace.written("teacher", TASK, chunk_id, keyspace.write_stamp(self.clock)), b"")
        self.labels += n


# Runs a module (``-m``) or code (``-c``) and, at exit, writes the peak RSS of its own image (``VmHWM``)
# to $SCALE_PEAK_FILE. Not ``ru_maxrss``: Linux counts in it the parent's RSS when the child was forked
# (the pages it shared before exec), and this parent has curated a large history in-process.
PEAK = """
import atexit, os, runpy, sys
def report():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["SCALE_PEAK_FILE"], "w") as out:
        out.write(peak)
atexit.register(report)
mode, target, *rest = sys.argv[1:]
sys.argv = [target, *rest]
if mode == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
"""


def measured(mode: str, target: str, args: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """Run a Python module (``-m``) or code (``-c``) in a fresh interpreter; its seconds, its peak RSS in
    MB (``VmHWM`` of its own image) and its stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(prefix="peak-") as peak:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PEAK, mode, target, *args], env={**env, "SCALE_PEAK_FILE": peak.name},
                              stdout=out, stderr=err, check=False)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{target[:40]!r} exited {proc.returncode}: {err.read().decode()[-2000:]}")
        return seconds, int(Path(peak.name).read_text()) / 1024, out.read()


def redis_and_ops_sections(sizes: list[int]) -> dict[str, Any]:
    """Redis bytes per session (``bench/_scale_redis.py``, at the largest size) and the Redis commands of
    ``labelq status`` and ``labelq audit`` on a million keys of history (``bench/_scale_ops.py``)."""
    from bench._scale_ops import ops_redis_commands
    from bench._scale_redis import redis_bytes_per_session

    memory = redis_bytes_per_session(max(sizes))
    return {**memory, "redis_bytes_per_session": memory["bytes_per_session"], **ops_redis_commands()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,300000,1000000", help="label counts, comma separated")
    parser.add_argument("--new", type=int, default=1_000, help="new labels curated on top of each history")
    parser.add_argument("--repeat", type=int, default=3, help="buckets of --new labels curated per size")
    parser.add_argument("--dir", type=Path, default=None, help="where the store goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    parser.add_argument("--no-hooks", action="store_true", help="skip the Redis and ops sections")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(","))
    base = Path(tempfile.mkdtemp(prefix="labelq-scale-", dir=args.dir))
    root = base / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELQ_")}
    env.update({"LABELQ_STATE_DIR": str(base / "state"), "LABELQ_STORE_URL": f"file://{root}",
                "PYTHONPATH": str(ROOT)})
    writer = BulkWriter(root)
    store = LocalStore(root)
    spec = load_spec(TASK)
    result: dict[str, Any] = {"sizes": sizes, "new_labels": args.new, "chunk": CHUNK,
                              "peak_rss_measure": "VmHWM of the subprocess's own image"}
    rows: dict[str, dict[str, Any]] = {}
    try:
        for size in sizes:
            row: dict[str, Any] = {}
            started = time.perf_counter()
            writer.write(size - writer.labels)
            row["history_write_s"] = round(time.perf_counter() - started, 1)
            out = base / "export.jsonl"
            seconds, rss, _ = measured("-m", CLI_MODULE, ["export", str(out), "--tmp-dir", str(base)], env)
            row.update(export_s=round(seconds, 2), export_peak_rss_mb=round(rss, 1),
                       exported=sum(1 for _ in out.open("rb")), history_labels=writer.labels)
            assert row["exported"] == writer.distinct, (row, writer.distinct)
            out.unlink()
            started, buckets = time.perf_counter(), 0
            while curate(store, spec) is not None:  # the history, as the trainer would have curated it
                buckets += 1
            row.update(history_curation_s=round(time.perf_counter() - started, 1), history_buckets=buckets)
            times, peaks = [], []
            for _ in range(args.repeat):  # the median of a few buckets: one is a fraction of a second
                writer.write(args.new)
                _, rss, stdout = measured("-c", CURATE, [], env)
                manifest = orjson.loads(stdout)
                assert manifest["labels_seen"] == args.new, manifest
                times.append(manifest["seconds"])
                peaks.append(rss)
            row.update(curation_s=round(statistics.median(times), 3), curation_s_all=[round(t, 3) for t in times],
                       curation_peak_rss_mb=round(max(peaks), 1),
                       curation_labels_read=manifest["labels_seen"], training_set_rows=manifest["counts"],
                       buckets_selected=manifest["buckets_selected"])
            read = ("from trainer.curation import read_training_set as r; t, v = r(__import__('labelq.store',"
                    f" fromlist=['x']).LocalStore(__import__('pathlib').Path({str(root)!r})), {TASK!r}, "
                    f"{manifest['version']!r}); print(len(t) + len(v))")
            seconds, rss, stdout = measured("-c", read, [], env)
            row.update(training_set_read_s=round(seconds, 2), training_set_read_peak_rss_mb=round(rss, 1),
                       training_set_read_rows=int(stdout))
            row["store_mb"] = round(sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20)
            rows[str(size)] = row
            print(f"{size:>9,} labels: {row}", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    small, large = rows[str(sizes[0])], rows[str(sizes[-1])]
    for key in ("export_peak_rss_mb", "export_s", "curation_s", "curation_peak_rss_mb",
                "training_set_read_peak_rss_mb", "history_labels", "history_curation_s", "store_mb"):
        result[key] = {size: r[key] for size, r in rows.items()}
    result.update(
        export_rss_ratio=round(large["export_peak_rss_mb"] / small["export_peak_rss_mb"], 3),
        curation_s_ratio=round(large["curation_s"] / small["curation_s"], 3),
        curation_rss_ratio=round(large["curation_peak_rss_mb"] / small["curation_peak_rss_mb"], 3),
        export_labels_per_s={size: round(r["history_labels"] / r["export_s"]) for size, r in rows.items()},
        rows=rows,
    )
    if not args.no_hooks:
        result.update(redis_and_ops_sections(sizes))
    emit(result, args.json)


if __name__ == "__main__":
    main()
