"""A session that kills its worker every time: its chunk is bisected after N deliveries until the
session is alone and dead-lettered; its chunk-mates are labelled and the rest of the queue flows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from labelq import keyspace
from labelq.audit import audit
from labelq.hashing import content_hash
from labelq.settings import Settings
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.chaos import (
    POISON,
    Fleet,
    record_result,
    tally,
    tally_row,
    wait_until,
)
from tests.support.helpers import jsonl_objects, write_jsonl
from tests.support.teacher import REPLAY_RATE_LIFTED
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
MAX_ATTEMPTS = 3


def test_poison_chunk_is_dead_lettered_while_the_queue_flows(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    good = list(generate(200, seed=7101))
    poison = [dict(s, session_id="poison-0", note=POISON) for s in generate(1, seed=7102)]
    settings = settings.model_copy(update={"chunk_size": 10, "curation_seed_size": 10**6,
                                           "max_attempts": MAX_ATTEMPTS})
    # The poison session sits in the middle of the first chunk, among 9 good ones.
    run_ingest(settings, [str(write_jsonl(tmp_path / "in.jsonl", good[:7] + poison + good[7:]))],
               client=redis_client)
    env = worker_env(settings, LABELQ_MAX_ATTEMPTS=str(MAX_ATTEMPTS), LABELQ_CURATION_SEED_SIZE=str(10**6),
                     LABELQ_TEACHER_BACKEND="replay", LABELQ_TEACHER_REPLAY_LATENCY_S="0.01", **REPLAY_RATE_LIFTED)
    expected = {content_hash(s) for s in poison + good}
    started = time.monotonic()
    with Fleet(env, tmp_path, app="tests.support.crashy_app") as fleet:
        # Prefork: the pool replaces a dead child; the parent rejects its message back to the queue.
        fleet.start("teacher", pool="prefork", concurrency=2)
        wait_until(lambda: tally(settings, expected).done, 120, "every session to be labelled or dead-lettered")
        final = tally(settings, expected)
        balance = audit(settings, redis_client).tasks["session-label"]
        crashes = fleet.logs().count(b"exited with 'exitcode 70'")
    letters = jsonl_objects(settings, keyspace.dead_letters_prefix("teacher"))
    assert {d["session_id"] for d in letters} == {s["session_id"] for s in poison}
    assert [d["reason"] for d in letters] == ["poison_chunk"]
    assert f"delivered {MAX_ATTEMPTS + 1} times" in letters[0]["detail"]
    labelled = {r["session_id"] for r in jsonl_objects(settings, keyspace.labels_prefix("teacher"))}
    assert labelled == {s["session_id"] for s in good}  # its chunk-mates and the rest of the queue
    assert final.lost == 0 and final.duplicates == 0 and final.unexpected == 0
    # It really killed its worker each time it was tried: max_attempts crashes per bisection level
    # (10 -> 5 -> 2 or 3 -> 1 or 2 -> 1 sessions).
    assert crashes % MAX_ATTEMPTS == 0 and 3 * MAX_ATTEMPTS <= crashes <= 5 * MAX_ATTEMPTS
    assert balance.gap == 0 and balance.in_flight == 0
    record_result(request, scenario="poison chunk (kills its worker on every delivery)",
                  load=f"{len(good)} good + 1 poison session, chunks of 10, prefork teacher (2 children)",
                  faults=f"{crashes} worker-process crashes; max_attempts {MAX_ATTEMPTS}, then bisection",
                  lost=final.lost, duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  **tally_row(final))
