"""Real `celery -A labelq.app.worker_app` student workers: hot swap without restart, SIGKILL mid-chunk."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from labelq import keyspace
from labelq.hashing import chunk_id
from labelq.keyspace import Stat
from labelq.queue.app import create_app
from labelq.queue.publish import republish
from labelq.schemas import SHADOW_ROUTE, ShadowRecord
from labelq.settings import Settings
from labelq.synth import generate
from tests.support.helpers import dead_letters, jsonl_objects, queued_chunks, wait_until
from tests.support.student import TASK, publish_adapter, student_records
from tests.support.teacher import make_chunk
from tests.support.worker_procs import celery_workers, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("torch")


def send(settings: Settings, client: redis.Redis, sessions: list[dict], size: int,  # type: ignore[type-arg]
         route: str = "steady") -> list[str]:
    """Put chunks of ``sessions`` on the student queue; return their chunk ids."""
    app = create_app(settings)
    ids = []
    for start in range(0, len(sessions), size):
        chunk = make_chunk(sessions[start:start + size], route=route)
        republish(settings, app, client, "student", chunk, chunk.sessions)
        ids.append(chunk_id(chunk.task, (s.content_hash for s in chunk.sessions), parent=chunk.chunk_id))
    return ids


def shadows(settings: Settings) -> list[ShadowRecord]:
    return [ShadowRecord.decode(row) for row in jsonl_objects(settings, keyspace.shadow_prefix(TASK))]


def labelled(settings: Settings, client: redis.Redis) -> int:
    return int(client.hget(keyspace.stats(settings, TASK), Stat.LABELLED_STUDENT) or 0)


def dead(settings: Settings, client: redis.Redis) -> int:
    """Sessions the student ended without a label: dead-lettered, or escalated to wait for the teacher
    (a broken answer always is)."""
    stats = keyspace.stats(settings, TASK)
    return sum(int(client.hget(stats, name) or 0) for name in (Stat.DEAD_STUDENT, Stat.ESCALATED_STUDENT))


def student_env(settings: Settings, tiny_model: Path, **extra: str) -> dict[str, str]:
    return worker_env(settings, LABELQ_STUDENT_BACKEND="transformers", LABELQ_STUDENT_MODEL=str(tiny_model),
                      LABELQ_STUDENT_ESCALATION_SHARE="0", LABELQ_STUDENT_WAIT_S="0.5", **extra)


def test_running_worker_waits_for_an_adapter_then_follows_promotions(
        settings: Settings, redis_client: redis.Redis, tiny_model: Path, tiny_adapters: dict[str, Path],
        tmp_path: Path) -> None:
    sessions = list(generate(104, seed=501))
    with celery_workers(student_env(settings, tiny_model), "student", 1, tmp_path):
        # A shadow chunk (teacher-sample sessions, labelled for agreement only) with no adapter to compare
        # is dropped, never parked; taken first, so it is gone when the three below are parked.
        send(settings, redis_client, sessions[96:100], 16, route=SHADOW_ROUTE)
        early = send(settings, redis_client, sessions[:48], 16)
        # No adapter yet: the worker parks every chunk off the queue (KEDA sees no work) and labels nothing.
        wait_until(lambda: redis_client.llen(keyspace.parked(settings, "student", TASK)) == 3, 120,
                   "the worker to park the chunks for want of an adapter")
        assert labelled(settings, redis_client) == 0 and shadows(settings) == []
        assert redis_client.llen(keyspace.queue(settings, "student")) == 0
        publish_adapter(settings, redis_client, tiny_adapters["style"], 1)
        wait_until(lambda: labelled(settings, redis_client) + dead(settings, redis_client) == 48, 120, "v1 labels")
        publish_adapter(settings, redis_client, tiny_adapters["constant"], 2)  # same worker, no restart
        late = send(settings, redis_client, sessions[48:96], 16)
        wait_until(lambda: labelled(settings, redis_client) + dead(settings, redis_client) == 96, 120, "v2 labels")
        send(settings, redis_client, sessions[100:104], 16, route=SHADOW_ROUTE)
        wait_until(lambda: len(shadows(settings)) == 4, 120, "the shadow records of v2")
    # Shadow records carry the serving version and are not labels: no counter moved, nothing escalated.
    assert {(r.adapter_version, r.session_id) for r in shadows(settings)} == {
        (2, str(s["session_id"])) for s in sessions[100:104]}
    assert labelled(settings, redis_client) + dead(settings, redis_client) == 96
    versions = {}
    for record in student_records(settings):
        versions.setdefault(record.chunk_id, set()).add(record.adapter_version)
    assert all(versions[c] == {1} for c in early) and all(versions[c] == {2} for c in late)
    waiting = [s.session_id for c in queued_chunks(settings, redis_client, "teacher") for s in c.sessions]
    assert len({r.session_id for r in student_records(settings)}) + len(dead_letters(settings, "student")) \
        + len(waiting) == 96


def test_worker_killed_mid_chunk_loses_nothing_and_writes_once(
        settings: Settings, redis_client: redis.Redis, tiny_model: Path, tiny_adapters: dict[str, Path],
        tmp_path: Path) -> None:
    settings = settings.model_copy(update={"visibility_timeout_s": 3, "chunk_size": 768})
    publish_adapter(settings, redis_client, tiny_adapters["style"], 1)
    sessions = list(generate(768, seed=601))  # one chunk: ~10 s of generation to be killed in
    [chunk_id] = send(settings, redis_client, sessions, 768)
    env = student_env(settings, tiny_model, LABELQ_VISIBILITY_TIMEOUT_S="3")
    attempts = keyspace.chunk_attempts(settings, "student", chunk_id)
    with celery_workers(env, "student", 1, tmp_path) as [proc]:
        wait_until(lambda: redis_client.exists(attempts) == 1, 120, "the chunk to start")
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-chunk: nothing committed yet
        proc.wait()
    assert labelled(settings, redis_client) == 0 and student_records(settings) == []
    time.sleep(4)  # past the visibility timeout: the restarted worker restores the unacked chunk at start
    (tmp_path / "again").mkdir()
    with celery_workers(env, "student", 1, tmp_path / "again"):
        wait_until(lambda: labelled(settings, redis_client) + dead(settings, redis_client) == 768, 180,
                 "the redelivered chunk")
    records, letters = student_records(settings), dead_letters(settings, "student")
    waiting = [s.session_id for c in queued_chunks(settings, redis_client, "teacher") for s in c.sessions]
    assert len(records) + len(letters) + len(waiting) == 768 and len(records) >= 760  # rare contract breaks
    ids = [r.session_id for r in records] + [d["session_id"] for d in letters] + waiting
    assert sorted(ids) == sorted(s["session_id"] for s in sessions)  # each exactly once
