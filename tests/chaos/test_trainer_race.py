"""Two trainer processes on one bucket at once (a rolling update of the trainer whose old pod lost its
bucket lock), on an S3-protocol store and a real Redis that loses the lock and the version counter
mid-training: each gets its own adapter version, each version holds one trainer's files, the registry
promotes no version twice, and a student fetches each version checked against the registry's hash."""

from __future__ import annotations

import hashlib
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
TASK, BUCKET, SESSIONS = "session-label", "v0001", 120

TRAINER = """
import os
import orjson
import trainer.lora as lora
from labelq.redis_server import connect
from labelq.settings import load_settings
from labelq.store import open_store
from trainer.service import train_bucket

real = lora.train_lora

def train_loudly(*args, **kwargs):  # the real training, printing each step for the test to see
    return real(*args, **{**kwargs, "on_step": lambda step, total, loss: print("STEP", step, flush=True)})

lora.train_lora = train_loudly
settings = load_settings()
report = train_bucket(settings, open_store(settings), connect(settings), "session-label", "v0001")
print("REPORT", os.getpid(), orjson.dumps(None if report is None else report.to_dict()).decode(), flush=True)
"""


def start_trainer(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", TRAINER], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)


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
        request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    settings = settings.model_copy(update={"student_model": str(tiny_model), "store_url": f"s3://{s3_bucket}/deploy",
                                           "s3_endpoint_url": s3_endpoint})
    store = open_store(settings)
    label_with_replay(settings, redis_client, list(generate(SESSIONS, seed=71)))
    assert curate(store, load_spec(TASK)) is not None
    env = worker_env(settings, LABELQ_STUDENT_MODEL=str(tiny_model), LABELQ_S3_ENDPOINT_URL=s3_endpoint)

    first = start_trainer(env)
    assert first.stdout is not None
    for line in first.stdout:  # wait until it holds the bucket, has claimed its version and trains
        if line.startswith(b"STEP 1"):
            break
    # Redis loses the bucket lock and the version counter (a restart without persistence, a failover):
    # the second trainer of the rolling update takes the same bucket while the first still trains.
    redis_client.delete(keyspace.train_lock(settings, TASK, BUCKET), keyspace.adapter_counter(settings, TASK))
    second = start_trainer(env)
    reports = dict([report_of(first), report_of(second)])

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
