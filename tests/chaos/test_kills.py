"""SIGKILL teacher and student workers mid-chunk, again and again: every session labelled exactly once."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import redis

from labelq.audit import audit
from labelq.hashing import content_hash
from labelq.queue.inspect import unacked_tags
from labelq.settings import Settings
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.chaos import Fleet, record_result, tally, tally_row, wait_until
from tests.support.helpers import write_jsonl
from tests.support.student import publish_adapter
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
pytest.importorskip("torch")

KILLS_PER_QUEUE = 6
VISIBILITY_S = 10


def test_repeated_sigkills_lose_and_duplicate_nothing(
        settings: Settings, redis_client: redis.Redis, tiny_model: Path, tiny_adapters: dict[str, Path],
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    sessions = list(generate(720, seed=7001))
    # Half to the teacher (the seed phase), the rest to the student, in chunks of 24.
    settings = settings.model_copy(update={"chunk_size": 24, "curation_seed_size": 360,
                                           "visibility_timeout_s": VISIBILITY_S, "max_attempts": 50})
    publish_adapter(settings, redis_client, tiny_adapters["style"], 1)
    run_ingest(settings, [str(write_jsonl(tmp_path / "in.jsonl", sessions))], client=redis_client)
    env = worker_env(settings, LABELQ_VISIBILITY_TIMEOUT_S=str(VISIBILITY_S), LABELQ_MAX_ATTEMPTS="50",
                     LABELQ_CURATION_SEED_SIZE="360", LABELQ_TEACHER_BACKEND="replay",
                     LABELQ_TEACHER_REPLAY_LATENCY_S="0.15", LABELQ_TEACHER_CONCURRENCY="4",
                     LABELQ_STUDENT_BACKEND="transformers", LABELQ_STUDENT_MODEL=str(tiny_model),
                     LABELQ_STUDENT_ESCALATION_SHARE="0", LABELQ_STUDENT_WAIT_S="0.5")
    rng = random.Random(7)
    started = time.monotonic()
    known: dict[str, set[bytes]] = {"teacher": set(), "student": set()}
    with Fleet(env, tmp_path) as fleet:
        for queue in ("teacher", "student"):
            fleet.start(queue)
        for turn in range(2 * KILLS_PER_QUEUE):
            queue = ("teacher", "student")[turn % 2]
            [proc] = fleet.live(queue)
            while True:  # until this worker is caught inside a chunk it took
                wait_until(lambda q=queue: bool(unacked_tags(settings, redis_client, q) - known[q]), 120,
                           f"the {queue} worker to take a chunk")
                taken = unacked_tags(settings, redis_client, queue) - known[queue]
                known[queue] |= taken
                time.sleep(rng.uniform(0.05, 0.3))  # somewhere inside the chunk
                if taken & unacked_tags(settings, redis_client, queue):  # not acknowledged yet: mid-chunk
                    break
            fleet.kill(proc, queue)
            fleet.start(queue)
        expected = {content_hash(s) for s in sessions}
        waited = wait_until(lambda: tally(settings, expected).done, 240, "every session to be labelled", poll_s=1)
        final = tally(settings, expected)
        balance = audit(settings, redis_client).tasks["session-label"]
    assert fleet.kills == {"teacher": KILLS_PER_QUEUE, "student": KILLS_PER_QUEUE}
    assert final.lost == 0 and final.duplicates == 0 and final.unexpected == 0
    # Nothing was given up for the kills; the tiny model rarely answers too long (escalation is off).
    assert all(r.startswith("student_too_") for r in final.dead_reasons) and final.dead_lettered <= 7
    assert balance.gap == 0 and balance.in_flight == 0
    record_result(request, scenario="worker SIGKILL mid-chunk",
                  load=f"{len(sessions)} sessions, chunks of 24, 1 teacher + 1 student worker",
                  faults=f"{sum(fleet.kills.values())} SIGKILLs (6 teacher, 6 student), visibility {VISIBILITY_S} s",
                  lost=final.lost, duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  drain_s=round(waited, 1), **tally_row(final))
