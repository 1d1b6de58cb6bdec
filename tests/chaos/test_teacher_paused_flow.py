"""The teacher's budget spent while sessions keep coming, at a small high-water mark: the sample
goes to students (flagged), so the paused teacher's queue never fills and ingestion never stalls."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from labelq import keyspace
from labelq.hashing import content_hash
from labelq.queue.inspect import queue_depth
from labelq.settings import Settings
from labelq.synth import generate
from producer.ingest import IngestSummary
from producer.run import run_ingest
from tests.support.chaos import Fleet, fake_adapter, record_result, tally, wait_until
from tests.support.helpers import jsonl_objects, write_jsonl
from tests.support.openai_server import FakeOpenAI
from tests.support.student import publish_adapter
from tests.support.teacher import API_KEY
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
HIGH_WATER = 4


def test_a_spent_teacher_budget_never_stalls_students_or_ingest(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = settings.model_copy(update={
        "chunk_size": 16, "curation_seed_size": 32, "routing_sample_rate": 0.2,
        "queue_high_water_chunks": HIGH_WATER, "queue_low_water_chunks": 1, "backpressure_poll_s": 0.1})
    seeds = list(generate(32, seed=7501))
    steady = list(generate(1200, seed=7502))
    publish_adapter(settings, redis_client, fake_adapter(tmp_path), 1)
    started = time.monotonic()
    with FakeOpenAI() as fake:
        env = worker_env(settings, LABELQ_TEACHER_BACKEND="openai", LABELQ_TEACHER_BASE_URL=fake.base_url,
                         LABELQ_TEACHER_API_KEY=API_KEY, LABELQ_TEACHER_BUDGET_USD="0.000001",
                         LABELQ_TEACHER_PAUSE_S="1", LABELQ_STUDENT_BACKEND="openai",
                         LABELQ_STUDENT_BASE_URL=fake.base_url, LABELQ_STUDENT_MODEL="served-base",
                         LABELQ_CURATION_SEED_SIZE="32", LABELQ_QUEUE_HIGH_WATER_CHUNKS=str(HIGH_WATER))
        with Fleet(env, tmp_path) as fleet:
            fleet.start("teacher")
            fleet.start("student")
            run_ingest(settings, [str(write_jsonl(tmp_path / "seed.jsonl", seeds))], client=redis_client)
            pause_key = keyspace.teacher_paused(settings, "session-label")
            wait_until(lambda: bool(redis_client.exists(pause_key)), 60, "the teacher to pause on its budget")
            done: list[IngestSummary] = []
            producer = threading.Thread(target=lambda: done.append(run_ingest(
                settings, [str(write_jsonl(tmp_path / "steady.jsonl", steady))], client=redis_client)))
            producer.start()
            expected = {content_hash(s) for s in steady}
            wait_until(lambda: bool(done), 180, "the producer to finish (no stall behind the paused teacher)")
            wait_until(lambda: tally(settings, expected).done, 180, "students to label every steady session")
            producer.join()
            teacher_depth = queue_depth(settings, redis_client, "teacher")
            final = tally(settings, expected)
            paused_calls = len(fake.requests)
    records = jsonl_objects(settings, keyspace.labels_prefix("student"))
    sample = [r for r in records if "route:sample_teacher_paused" in r["flags"]]
    assert done[0].enqueued == len(steady)
    assert teacher_depth <= HIGH_WATER  # only the seed chunks wait for more budget
    assert final.lost == 0 and final.duplicates == 0 and final.unexpected == 0 and final.dead_lettered == 0
    assert len(sample) > 0.1 * len(steady)  # the 20% sample, labelled by students, flagged
    record_result(request, scenario="teacher budget spent, students still flowing",
                  load=f"{len(seeds)} seed + {len(steady)} steady sessions, chunks of 16, high water {HIGH_WATER}, "
                       "1 teacher + 1 student worker",
                  faults=f"teacher budget $0.000001 (paused from its first call); {paused_calls} provider calls",
                  lost=final.lost, duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  labelled=final.labelled, dead_lettered=final.dead_lettered,
                  sampled_to_students=len(sample), teacher_queue=teacher_depth)
