"""Two trainer processes on one bucket at once (a rolling update of the trainer whose old pod lost its
bucket lock), on an S3-protocol store and a real Redis that loses the lock and the version counter
mid-training: each gets its own adapter version, each version holds one trainer's files, the registry
promotes no version twice, and a student fetches each version checked against the registry's hash."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from labelq import adapter_manifest, keyspace
from labelq.keyspace import AdapterFile
from labelq.registry import Registry
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.store import ObjectStore, open_store
from labelq.synth import generate
from tests.support.chaos import ROOT, record_result
from tests.support.teacher import label_with_replay
from tests.support.worker_procs import worker_env
from trainer.curation import curate
from workers.student.cache import AdapterCache

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
pytest.importorskip("torch")
TASK, BUCKET, SESSIONS = "session-label", "v0001", 40

TRAINER = """
import dataclasses
import os
import time
from pathlib import Path

import orjson
import trainer.lora as lora
from labelq.redis_server import connect
from labelq.settings import load_settings
from labelq.store import open_store
from trainer.service import train_bucket

real = lora.train_lora
start, release = Path(os.environ["RACE_START_FILE"]), Path(os.environ["RACE_RELEASE_FILE"])

def on_step(step, total, loss):  # each step printed for the test; the first held until the test says go
    print("STEP", step, flush=True)
    while step == 1 and not release.exists():
        time.sleep(0.05)

def train_briefly(base, examples, out, config, **kwargs):  # the real training, one epoch
    return real(base, examples, out, dataclasses.replace(config, epochs=1), **{**kwargs, "on_step": on_step})

lora.train_lora = train_briefly
import peft, torch, transformers  # loaded before the start signal, as in a trainer that polls
settings = load_settings()
while not start.exists():
    time.sleep(0.05)
report = train_bucket(settings, open_store(settings), connect(settings), "session-label", "v0001")
print("REPORT", os.getpid(), orjson.dumps(None if report is None else report.to_dict()).decode(), flush=True)
"""


def start_trainer(env: dict[str, str], start: Path) -> subprocess.Popen[bytes]:
    """A trainer process that loads its libraries, then trains the bucket once ``start`` exists."""
    return subprocess.Popen([sys.executable, "-c", TRAINER], env={**env, "RACE_START_FILE": str(start)}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_for_step(proc: subprocess.Popen[bytes]) -> None:
    """Until the trainer prints its first training step (its version is chosen before it trains)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(b"STEP 1"):
            return
    pytest.fail(f"the trainer exited with {proc.wait()} before training")


def report_of(proc: subprocess.Popen[bytes]) -> tuple[int, dict[str, Any]]:
    """The trainer's pid and its training report, once it has finished."""
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-2000:]
    [line] = [ln for ln in out.splitlines() if ln.startswith(b"REPORT ")]
    _, pid, report = line.split(b" ", 2)
    return int(pid), orjson.loads(report)


def one_trainers_files(store: ObjectStore, version: int) -> tuple[str, int]:
    """The version's content hash and the pid of the trainer that claimed it, after checking that every
    file its manifest lists is in the store with that sha256 (one set of files, not a mix)."""
    manifest = store.get_bytes(keyspace.adapter_file(TASK, version, AdapterFile.MANIFEST))
    for name, entry in adapter_manifest.parse_manifest(manifest).items():
        data = store.get_bytes(keyspace.adapter_file(TASK, version, AdapterFile(name)))
        assert hashlib.sha256(data).hexdigest() == entry.sha256, (version, name)
    claim = orjson.loads(store.get_bytes(keyspace.adapter_file(TASK, version, AdapterFile.CLAIM)))
    return adapter_manifest.content_hash(manifest), int(claim["pid"])


def test_two_trainers_racing_on_one_bucket_write_two_versions_one_trainer_each(
        settings: Settings, redis_client: redis.Redis, tiny_model: Path, s3_endpoint: str, s3_bucket: str,
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    settings = settings.model_copy(update={"student_model": str(tiny_model), "store_url": f"s3://{s3_bucket}/deploy",
                                           "s3_endpoint_url": s3_endpoint})
    store = open_store(settings)
    label_with_replay(settings, redis_client, list(generate(SESSIONS, seed=71)))
    assert curate(store, load_spec(TASK)) is not None
    # One epoch on 32 rows reaches no quality floor: the floors and the golden set are off here, so both
    # trainers race through the promotion too.
    env = worker_env(settings, LABELQ_STUDENT_MODEL=str(tiny_model), LABELQ_S3_ENDPOINT_URL=s3_endpoint,
                     LABELQ_PROMOTE_FLOOR_EXACT="0", LABELQ_PROMOTE_FLOOR_COSINE="0",
                     LABELQ_PROMOTE_FLOOR_WITHIN_CONTRACT="0", LABELQ_PROMOTE_GOLDEN_MIN_SHARE="0")

    release = tmp_path / "release"
    env["RACE_RELEASE_FILE"] = str(release)
    go_first, go_second = tmp_path / "go-first", tmp_path / "go-second"
    first, second = start_trainer(env, go_first), start_trainer(env, go_second)
    try:
        go_first.touch()
        wait_for_step(first)  # it holds the bucket lock, has its version and trains
        # Redis loses the bucket lock and the version counter (a restart without persistence, a failover):
        # the second trainer of the rolling update takes the same bucket while the first still trains.
        redis_client.delete(keyspace.train_lock(settings, TASK, BUCKET), keyspace.adapter_counter(settings, TASK))
        go_second.touch()
        wait_for_step(second)  # it has its version too: both now finish, write and promote
        release.touch()
        reports = dict([report_of(first), report_of(second)])
    finally:
        for proc in (first, second):
            if proc.poll() is None:  # a failed test leaves no trainer waiting for its signal
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    versions = sorted(r["version"] for r in reports.values())
    assert versions == [1, 2], "two trainers must never write one version"
    registry = Registry(settings, redis_client, store)
    assert registry.versions(TASK) == [1, 2]
    duplicates = 0
    for pid, report in reports.items():
        version = report["version"]
        content_hash, claimed_by = one_trainers_files(store, version)
        duplicates += claimed_by != pid
        assert report["content_hash"] == content_hash == registry.content_hash(TASK, version)
        assert registry.metrics(TASK, version) == report  # written once, by this trainer
    history = registry.state(TASK)["history"]
    assert len(history) == len(set(history)) and set(history) <= {1, 2}
    # A student fetches each version, checked against the registry's hash.
    cache = AdapterCache(store, settings.state_dir / "student-cache", keep=2)
    for version in versions:
        copy = Path(cache.get(TASK, version, registry.content_hash(TASK, version)).path)
        adapter_manifest.check_folder(copy, (AdapterFile.CONFIG, AdapterFile.WEIGHTS),
                                      registry.content_hash(TASK, version))
    assert duplicates == 0
    record_result(request, scenario="two trainers racing on one bucket", load=f"1 bucket ({SESSIONS} sessions), "
                  "2 trainer processes, S3 store", faults="bucket lock and version counter lost mid-training",
                  lost=0, duplicates=duplicates, versions=versions, history=history,
                  seconds=round(time.monotonic() - started, 1))
