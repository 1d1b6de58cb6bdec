"""A teacher that must not run sends no request and takes no work: an unpriced model with a small budget
(priced at $0 it would have made ~50,000 calls per dollar... or any number), and an empty API key
(compose's ``${OPENAI_API_KEY:-}``, which used to become the replay teacher and accept a session's own
``_reference`` as its label). Real worker processes and ``labelq teach`` against the loopback OpenAI
server, with work waiting in the queue; the fake server's own tally counts the calls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from labelq.budget import budget_state
from labelq.hashing import content_hash
from labelq.settings import Settings
from labelq.status import gather
from labelq.store import open_store
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.chaos import Fleet, record_result, tally, wait_until
from tests.support.cli import labelq
from tests.support.helpers import queued_chunks, write_jsonl
from tests.support.openai_server import FakeConfig, FakeOpenAI
from tests.support.teacher import API_KEY, teacher_records
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

UNPRICED = "gpt-4o-2024-11-20-eu-deployment"  # neither a priced family nor a family plus a date
SESSIONS = 100
WORKERS = 2


def ingest(settings: Settings, client: redis.Redis, tmp_path: Path, seed: int) -> tuple[Path, set[str]]:
    sessions: list[dict[str, Any]] = list(generate(SESSIONS, seed=seed))
    for s in sessions:  # what a submitter would put there: never a label outside replay
        s["_reference"] = {"label": "Submitter chose this label"}
    path = write_jsonl(tmp_path / "in.jsonl", sessions)
    assert run_ingest(settings, [str(path)], client=client).enqueued == SESSIONS
    return path, {content_hash(s) for s in sessions}


def refused_fleet(env: dict[str, str], tmp_path: Path) -> tuple[list[int | None], bytes]:
    """Start the teacher workers; each must exit on its own before taking a message."""
    with Fleet(env, tmp_path) as fleet:
        procs = [fleet.start("teacher", pool="prefork", concurrency=2) for _ in range(WORKERS)]
        codes = [p.wait(timeout=120) for p in procs]
        return codes, fleet.logs()


def waiting(settings: Settings, client: redis.Redis) -> set[str]:
    return {s.content_hash for c in queued_chunks(settings, client, "teacher") for s in c.sessions}


def test_an_unpriced_model_with_a_small_budget_makes_no_call(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    budget = 0.05
    started = time.monotonic()
    settings = settings.model_copy(update={"chunk_size": 10, "curation_seed_size": 10**6})
    path, expected = ingest(settings, redis_client, tmp_path, seed=9101)
    with FakeOpenAI() as fake:
        teacher = {"LABELQ_TEACHER_BACKEND": "openai", "LABELQ_TEACHER_BASE_URL": fake.base_url,
                   "LABELQ_TEACHER_API_KEY": API_KEY, "LABELQ_TEACHER_MODEL": UNPRICED,
                   "LABELQ_TEACHER_BUDGET_USD": str(budget)}
        codes, logs = refused_fleet(worker_env(settings, **teacher), tmp_path)
        teach = labelq(["teach", str(path), "--json"], settings, env=teacher)
        calls = len(fake.requests)
    assert all(code not in (0, None) for code in codes), codes
    assert logs.count(b"no price for teacher model") >= WORKERS and b"LABELQ_TEACHER_PRICES" in logs
    assert teach.returncode == 2 and b"LABELQ_TEACHER_PRICES" in teach.stderr and b"[teacher.prices]" in teach.stderr
    assert calls == 0
    state = budget_state(redis_client, settings, "session-label", open_store(settings))
    assert (state.spent_usd, state.reserved_usd) == (0.0, 0.0)  # in Redis and in the durable record
    assert waiting(settings, redis_client) == expected  # not one message taken: nothing lost
    final = tally(settings, expected)
    assert final.labelled == final.dead_lettered == 0
    record_result(request, scenario="unpriced teacher model, small budget",
                  load=f"{SESSIONS} sessions queued, {WORKERS} teacher worker processes, `labelq teach`",
                  faults=f"teacher model `{UNPRICED}` has no price; budget ${budget}",
                  lost=len(expected - waiting(settings, redis_client)), duplicates=final.duplicates,
                  seconds=round(time.monotonic() - started, 1), api_calls=calls,
                  worker_exit_codes=codes, teach_exit_code=teach.returncode)


def test_an_empty_api_key_is_refused_never_replayed(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    settings = settings.model_copy(update={"chunk_size": 10, "curation_seed_size": 10**6})
    path, expected = ingest(settings, redis_client, tmp_path, seed=9102)
    with FakeOpenAI() as fake:
        env = worker_env(settings, OPENAI_API_KEY="")  # docker-compose's ${OPENAI_API_KEY:-}, nothing else
        del env["LABELQ_TEACHER_BACKEND"]  # the default backend, as compose runs it
        codes, logs = refused_fleet(env, tmp_path)
        teach = labelq(["teach", str(path), "--json"], settings.model_copy(update={"teacher_backend": "openai"}),
                       env={"OPENAI_API_KEY": "  "})
        calls = len(fake.requests)
    assert all(code not in (0, None) for code in codes), codes
    assert b"OPENAI_API_KEY" in logs and b"LABELQ_TEACHER_BACKEND=replay" in logs
    assert b'"teacher_replay"' not in logs
    assert teach.returncode == 2 and b"OPENAI_API_KEY" in teach.stderr
    assert calls == 0 and teacher_records(settings) == []  # no submitted `_reference` became a label
    assert waiting(settings, redis_client) == expected
    final = tally(settings, expected)
    record_result(request, scenario="empty teacher API key (compose's default)",
                  load=f"{SESSIONS} sessions queued, each with its own `_reference` label, {WORKERS} teacher "
                       "worker processes, `labelq teach`",
                  faults="OPENAI_API_KEY empty (workers) or blank (teach), no backend chosen",
                  lost=len(expected - waiting(settings, redis_client)), duplicates=final.duplicates,
                  seconds=round(time.monotonic() - started, 1), api_calls=calls, labelled=final.labelled,
                  worker_exit_codes=codes, teach_exit_code=teach.returncode)


@pytest.mark.parametrize(("fault", "names"), [("404", b"LABELQ_TEACHER_MODEL"), ("401", b"OPENAI_API_KEY")])
def test_a_missing_model_or_a_refused_key_waits_on_configuration(
        fault: str, names: bytes, settings: Settings, redis_client: redis.Redis, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """A model the provider does not have (404) or a key it refuses (401): the workers stay up, every
    chunk waits on configuration with a message naming the setting, nothing is dead-lettered."""
    started = time.monotonic()
    _, expected = ingest(settings, redis_client, tmp_path, seed=7603)
    with FakeOpenAI(FakeConfig(fault_rates={fault: 1.0})) as fake:
        env = worker_env(settings, LABELQ_TEACHER_BACKEND="openai", LABELQ_TEACHER_BASE_URL=fake.base_url,
                         LABELQ_TEACHER_API_KEY=API_KEY, LABELQ_TEACHER_PAUSE_S="1")
        with Fleet(env, tmp_path) as fleet:
            fleet.start("teacher")
            wait_until(lambda: "teacher" in gather(settings, redis_client).waiting, 60, "the teacher to wait")
            time.sleep(3)  # a few more deliveries, each refused the same way
            snapshot = gather(settings, redis_client)
            calls = len(fake.requests)
            logs = fleet.logs()
            alive = all(p.poll() is None for p in fleet.live("teacher"))
    final = tally(settings, expected)
    assert alive and snapshot.waiting["teacher"].on == "configuration"
    assert names in snapshot.waiting["teacher"].detail.encode()
    assert names in logs and API_KEY.encode() not in logs
    assert final.dead_lettered == 0 and final.labelled == 0 and teacher_records(settings) == []
    assert final.lost == len(expected)  # none ended: all wait for the operator's fix
    record_result(request, scenario=f"teacher {'model not found (404)' if fault == '404' else 'key refused (401)'}",
                  load=f"{SESSIONS} sessions queued, 1 teacher worker",
                  faults=f"every call answered {fault}; {calls} calls in {time.monotonic() - started:.0f} s",
                  lost=0, duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  labelled=0, dead_lettered=final.dead_lettered, waiting_in_queue=len(expected))
