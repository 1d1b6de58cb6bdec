"""Budget and rate limits hold while several real worker processes race."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.budget import budget_state
from labelq.ledger import read_ledger
from labelq.queue.inspect import queue_depth
from labelq.settings import Settings
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.helpers import queued_chunks, unacked_chunks, wait_until, write_jsonl
from tests.support.openai_server import FakeConfig, FakeOpenAI
from tests.support.teacher import API_KEY, teacher_records
from tests.support.worker_procs import celery_workers, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_budget_never_exceeded_by_racing_workers(settings: Settings, redis_client: redis.Redis,
                                                 tmp_path: Path) -> None:
    budget = 0.03
    path = write_jsonl(tmp_path / "in.jsonl", list(generate(300, seed=21)))
    settings = settings.model_copy(update={"chunk_size": 10})
    assert run_ingest(settings, [str(path)], client=redis_client).enqueued == 300
    with FakeOpenAI(FakeConfig(latency_s=0.02)) as fake:
        env = worker_env(settings, LABELQ_TEACHER_BACKEND="openai", LABELQ_TEACHER_BASE_URL=fake.base_url,
                         LABELQ_TEACHER_API_KEY=API_KEY, LABELQ_TEACHER_BUDGET_USD=str(budget),
                         LABELQ_TEACHER_PAUSE_S="0.3", LABELQ_TEACHER_CONCURRENCY="8")
        paused = keyspace.teacher_paused(settings, "session-label")
        with celery_workers(env, "teacher", 4, tmp_path):
            wait_until(lambda: redis_client.exists(paused) == 1, 90, "the budget to run out")
            time.sleep(2)  # let every racing worker hit the cap
        spent = budget_state(redis_client, settings, "session-label").spent_usd
        ledger = read_ledger(redis_client, settings, "session-label")
        records = teacher_records(settings)
        assert spent <= budget and ledger.usd <= budget + 1e-6
        assert sum(r.cost_usd for r in records) <= budget
        # The cap was reached, not undershot. When the pause is declared, up to 4 workers x 8 calls hold
        # reservations at the worst-case price; what they do not spend is released, so spend settles
        # below the cap (78-95% measured, lower when the machine is busy and more calls are in flight).
        assert spent > 0.7 * budget
        # Nothing lost: every session is labelled or still waiting in the queue.
        chunks = queued_chunks(settings, redis_client, "teacher") + unacked_chunks(settings, redis_client)
        waiting = {s.session_id for c in chunks for s in c.sessions}
        labelled = {r.session_id for r in records}
        assert len(labelled | waiting) == 300 and not labelled & waiting
        assert orjson.loads(redis_client.get(paused))["reason"] == "budget of $0.03 is spent"


def test_rate_limit_holds_and_is_used_across_workers(settings: Settings, redis_client: redis.Redis,
                                                     tmp_path: Path) -> None:
    limit, window_s = 60, 2.0
    path = write_jsonl(tmp_path / "in.jsonl", list(generate(400, seed=22)))
    settings = settings.model_copy(update={"chunk_size": 20})
    run_ingest(settings, [str(path)], client=redis_client)
    with FakeOpenAI(FakeConfig(latency_s=0.05)) as fake:
        env = worker_env(settings, LABELQ_TEACHER_BACKEND="openai", LABELQ_TEACHER_BASE_URL=fake.base_url,
                         LABELQ_TEACHER_API_KEY=API_KEY, LABELQ_TEACHER_RPM=str(limit),
                         LABELQ_TEACHER_RATE_WINDOW_S=str(window_s), LABELQ_TEACHER_CONCURRENCY="16",
                         LABELQ_LOG_LEVEL="DEBUG")
        with celery_workers(env, "teacher", 4, tmp_path):
            wait_until(lambda: len(fake.requests) >= 200, 60, "200 requests at the server")
        arrivals = sorted(r["t"] for r in fake.requests)
    # What the limiter controls, on Redis's clock: never more than the limit in any window.
    permits = sorted(
        orjson.loads(line)["permit_ms"] / 1000
        for log in tmp_path.glob("teacher-*.log") for line in log.read_bytes().splitlines()
        if b'"teacher_request"' in line)
    assert len(permits) >= 200
    assert worst_window(permits, window_s) <= limit
    # Where requests arrive, over the whole run: never more than the limit per window on
    # average (one window of slack). Per-2 s-window counts at the server move by a few
    # requests with event-loop stalls on two busy cores; the 2% goal per 60 s window is
    # measured at the server in bench/teacher.py.
    span_s = arrivals[-1] - arrivals[0]
    assert len(arrivals) <= limit * (span_s / window_s + 1)
    # Every request the server saw went through the limiter: one permit each. (That the limit can be
    # used in full is counted exactly in test_limiter.py, not measured here as a rate.)
    assert len(permits) == len(arrivals)
    assert queue_depth(settings, redis_client, "teacher") > 0  # work was still waiting


def worst_window(times: list[float], window_s: float) -> int:
    return max(sum(1 for t in times[i:] if t < start + window_s) for i, start in enumerate(times))
