"""`labelq teach --batch-api` SIGKILLed while its batches run, then run again: it resumes them, submits
nothing twice, labels every session once and counts the spend once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.budget import budget_state
from labelq.hashing import content_hash
from labelq.ledger import read_ledger
from labelq.settings import Settings
from labelq.store import open_store
from labelq.synth import generate
from tests.support.chaos import ROOT, record_result, tally, wait_until
from tests.support.cli import COMMAND, cli_env, labelq
from tests.support.helpers import write_jsonl
from tests.support.openai_server import FakeConfig, FakeOpenAI
from tests.support.teacher import API_KEY, teacher_records

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

TASK = "session-label"


def sent_parts(settings: Settings) -> int:
    return sum(1 for k in open_store(settings).list(keyspace.batch_jobs_prefix(TASK)) if k.endswith(".sent.json"))


def test_a_killed_batch_teach_resumes_without_resubmitting(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    sessions = list(generate(60, seed=7501))
    expected = {content_hash(s) for s in sessions}
    source = write_jsonl(tmp_path / "seed.jsonl", sessions)
    started = time.monotonic()
    with FakeOpenAI(FakeConfig(batch_polls_to_finish=10**6)) as fake:  # the batches run until the kill
        env = {"LABELQ_TEACHER_BACKEND": "openai", "LABELQ_TEACHER_BASE_URL": fake.base_url,
               "OPENAI_API_KEY": API_KEY, "LABELQ_TEACHER_BATCH_MAX_REQUESTS": "25"}
        args = ["teach", str(source), "--batch-api", "--poll-s", "0.05", "--json"]
        with (tmp_path / "first.log").open("wb") as log:
            first = subprocess.Popen([*COMMAND, *args], env=cli_env(settings, env), cwd=ROOT, stdout=log,
                                     stderr=subprocess.STDOUT)
            try:
                wait_until(lambda: sent_parts(settings) == 3 and all(
                    b["_polls"] > 2 for b in fake.batches.values()), 60, "three batches submitted and polled")
            finally:
                os.kill(first.pid, signal.SIGKILL)
                first.wait()
        assert all(b["status"] == "in_progress" for b in fake.batches.values())
        assert teacher_records(settings) == []  # nothing collected before the kill
        fake.config.batch_polls_to_finish = 2
        again = labelq(args, settings, env=env)  # waits out the killed run's lock (about 10 s)
        assert again.returncode == 0, again.stderr
        summary = orjson.loads(again.stdout.splitlines()[-1])
        created = len(fake.batches)
        billed = fake.billed_usd(settings)
    final = tally(settings, expected)
    ledger = read_ledger(redis_client, settings, TASK)
    assert created == 3 and summary["resumed"] == 3  # one creation per batch: none submitted twice
    assert summary["labelled"] == 60 and final.lost == 0 and final.duplicates == 0 and final.unexpected == 0
    assert ledger.models[settings.teacher_model].calls == 60  # spend counted once
    assert ledger.usd == pytest.approx(billed, abs=60e-6)
    assert budget_state(redis_client, settings, TASK).spent_usd == pytest.approx(billed, abs=60e-6)
    record_result(request, scenario="Batch API teach killed (SIGKILL) while its batches run, then run again",
                  load=f"{len(expected)} sessions in 3 batches (at most 25 requests a batch)",
                  faults="SIGKILL of `labelq teach --batch-api` after submission; the same command run again",
                  lost=final.lost, duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  batches_created=created, resumed=summary["resumed"], billed_usd=round(billed, 6),
                  ledger_usd=round(ledger.usd, 6), labelled=final.labelled)
