"""Redis flushed (FLUSHALL) while teacher workers spend a small budget, and the work fed again: the
money the fake provider itself counts never passes the budget, because the budget resumes from the
durable record in the store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from labelq import keyspace
from labelq.budget import budget_state, durable_spent_micro
from labelq.hashing import content_hash
from labelq.ledger import MICRO
from labelq.settings import Settings
from labelq.store import open_store
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.chaos import Fleet, record_result, tally, wait_until
from tests.support.helpers import jsonl_objects, queued_chunks, unacked_chunks, write_jsonl
from tests.support.openai_server import FakeConfig, FakeOpenAI
from tests.support.redis_process import RedisProcess
from tests.support.teacher import API_KEY
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

WORKERS = 4
TASK = "session-label"


def test_redis_flushed_mid_run_never_spends_past_the_budget(
        settings: Settings, tmp_path: Path, own_redis: RedisProcess, request: pytest.FixtureRequest) -> None:
    budget, rpm = 0.1, 20  # about 75 calls; 20 a second, so the flush lands mid-spend
    server = own_redis
    client = redis.Redis.from_url(server.url)
    settings = settings.model_copy(update={"redis_url": SecretStr(server.url), "chunk_size": 10,
                                           "curation_seed_size": 10**6})
    sessions = list(generate(300, seed=7401))
    expected = {content_hash(s) for s in sessions}
    source = write_jsonl(tmp_path / "in.jsonl", sessions)
    run_ingest(settings, [str(source)], client=client)
    started = time.monotonic()
    with FakeOpenAI(FakeConfig(latency_s=0.02)) as fake:
        env = worker_env(settings, LABELQ_TEACHER_BACKEND="openai", LABELQ_TEACHER_BASE_URL=fake.base_url,
                         LABELQ_TEACHER_API_KEY=API_KEY, LABELQ_TEACHER_BUDGET_USD=str(budget),
                         LABELQ_TEACHER_PAUSE_S="0.3", LABELQ_TEACHER_CONCURRENCY="4",
                         LABELQ_TEACHER_RPM=str(rpm), LABELQ_TEACHER_RATE_WINDOW_S="1",
                         LABELQ_CURATION_SEED_SIZE=str(10**6), LABELQ_VISIBILITY_TIMEOUT_S="30")
        with Fleet(env, tmp_path) as fleet:
            for _ in range(WORKERS):
                fleet.start("teacher")
            wait_until(lambda: budget_state(client, settings, TASK).spent_usd >= 0.4 * budget, 120,
                       "the workers to spend 40% of the budget", poll_s=0.05)
            billed_at_flush = fake.billed_usd(settings)
            client.flushall()  # queues, budget, cache, rate limit, dedupe: every key; the workers keep running
            run_ingest(settings, [str(source)], client=client)  # the operator feeds the input again
            paused = keyspace.teacher_paused(settings, TASK)
            wait_until(lambda: bool(client.exists(paused)), 120, "the budget to run out after the flush")
            time.sleep(2)  # every racing worker meets the cap
            logs = fleet.logs()
        # Read the queues once the workers have stopped: a running worker moves a paused chunk from the
        # unacked set back to its queue (and takes it again) between any two reads.
        waiting = {s.content_hash for c in queued_chunks(settings, client, "teacher")
                   + unacked_chunks(settings, client) for s in c.sessions}
        final = tally(settings, expected)
        billed = fake.billed_usd(settings)
        calls = len(fake.billed)
    ended = {r["content_hash"] for r in jsonl_objects(settings, keyspace.labels_prefix("teacher"))}
    durable = durable_spent_micro(open_store(settings), TASK, "total") / MICRO
    # The provider's own bill, not labelq's books: never past the budget, flush or not.
    assert billed <= budget
    assert billed > 0.6 * budget and billed > billed_at_flush  # it spent after the flush too, up to near the cap
    assert b"teacher_budget_seeded" in logs  # the budget was started again from the store
    assert durable >= billed - calls * 1e-6  # every dollar the provider counted (to the micro-dollar) is kept
    lost = len(expected - ended - waiting)
    assert lost == 0 and final.duplicates == 0 and final.unexpected == 0
    record_result(request, scenario="Redis flushed mid-run (FLUSHALL), 4 racing teacher worker processes",
                  load=f"{len(expected)} sessions fed again after the flush, budget ${budget}",
                  faults="FLUSHALL once 40% of the budget is spent (queues, budget, cache, limiter: every key)",
                  lost=lost, duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  billed_usd=round(billed, 5), billed_at_flush_usd=round(billed_at_flush, 5),
                  durable_usd=round(durable, 5), calls=calls, labelled=len(ended), waiting=len(waiting))
