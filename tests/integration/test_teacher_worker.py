"""Ingest, then real `celery -A labelq.app.worker_app` teacher workers label everything (replay teacher)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.queue.inspect import queue_depth
from labelq.settings import Settings
from labelq.status import gather
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.helpers import keys_without_ttl, write_jsonl
from tests.support.teacher import REPLAY_RATE_LIFTED, teacher_records
from tests.support.worker_procs import celery_workers, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_replay_teacher_workers_label_everything(settings: Settings, redis_client: redis.Redis,
                                                 tmp_path: Path) -> None:
    sessions = list(generate(200, seed=41))
    path = write_jsonl(tmp_path / "in.jsonl", sessions, [b"not json"])
    settings = settings.model_copy(update={"chunk_size": 16})
    assert run_ingest(settings, [str(path)], client=redis_client).enqueued == 200
    env = worker_env(settings, LABELQ_TEACHER_BACKEND="replay", LABELQ_TEACHER_REPLAY_LATENCY_S="0.001",
                     **REPLAY_RATE_LIFTED)
    with celery_workers(env, "teacher", 2, tmp_path, pool="prefork", concurrency=2):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if gather(settings, redis_client).tasks["session-label"].labelled_teacher == 200:
                break
            time.sleep(0.3)
    records = teacher_records(settings)
    assert len(records) == 200
    by_id = {s["session_id"]: s["_reference"]["label"] for s in sessions}
    assert all(r.label == by_id[r.session_id] and r.model == "replay" and "replay" in r.flags
               for r in records)
    assert all(r.cost_usd > 0 for r in records)  # priced like the real model, for honest reports
    assert queue_depth(settings, redis_client, "teacher") == 0
    snapshot = gather(settings, redis_client).tasks["session-label"]
    assert snapshot.ingested == 200 and snapshot.dead_lettered == 1
    assert snapshot.teacher.models["replay"].calls == 200
    # Every key of a session or a chunk expires (dedupe buckets, cache, done markers, attempts, claim
    # memos); what never does is one per task, per queue or per deployment, whatever the volume.
    task, prefix = "session-label", settings.redis_key_prefix
    per_task = {keyspace.stats(settings, task), keyspace.dlq_reasons(settings), keyspace.dlq_task(settings, task),
                keyspace.ledger(settings, task), keyspace.routing(settings, task),
                keyspace.routing_strata(settings, task), keyspace.budget_keys(settings, task, "total")[0],
                keyspace.task_registry(settings), keyspace.task_registry_complete(settings)}  # one per deployment
    kombus = {f"{prefix}_kombu.binding.teacher", f"{prefix}_kombu.binding_permanent.teacher",
              f"{prefix}_kombu.binding_deadlines"}  # kombu's queue bindings
    assert keys_without_ttl(settings, redis_client) <= per_task | kombus
    logs = b"".join(p.read_bytes() for p in tmp_path.glob("teacher-*.log"))
    assert b'"teacher_replay"' in logs
    # One runtime per pool child that took a chunk (it says "replay" once), closed as the child exited.
    assert logs.count(b'"teacher_runtime_closed"') == logs.count(b'"teacher_replay"') >= 1
    assert any(orjson.loads(line).get("event") == "chunk_done" for line in logs.splitlines()
               if line.startswith(b"{"))
