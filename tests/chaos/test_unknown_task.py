"""A typo in ``--task``: refused before any input is read (exit 2, the known tasks named), nothing queued,
nothing dead-lettered. Before, each chunk failed in the workers and was halved down to single sessions, all
dead-lettered as ``poison_chunk``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from labelq.settings import Settings
from labelq.status import gather
from labelq.synth import generate
from tests.support.chaos import record_result
from tests.support.cli import labelq
from tests.support.helpers import write_jsonl

pytestmark = [pytest.mark.chaos]


def test_an_unknown_task_is_refused_before_reading_input(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    source = write_jsonl(tmp_path / "in.jsonl", list(generate(64, seed=7701)))
    done = labelq(["ingest", str(source), "--task", "sesion-label", "--json"], settings)
    assert done.returncode == 2 and b"Traceback" not in done.stderr
    assert b"no task spec 'sesion-label'; known: session-label" in done.stderr.replace(b"\n", b"")
    snapshot = gather(settings, redis_client)
    assert snapshot.queues["teacher"] == snapshot.queues["student"] == 0
    assert snapshot.dead_letter == {} and snapshot.tasks == {}
    assert done.stdout.strip() == b""  # no summary: nothing was read
    record_result(request, scenario="unknown task at ingest", load="64 sessions, `labelq ingest --task sesion-label`",
                  faults="a typo in --task", lost=0, duplicates=0, seconds=round(time.monotonic() - started, 1),
                  dead_lettered=0, exit_status=done.returncode)
