"""`labelq ingest` killed (SIGKILL) or stopped (SIGTERM) while it waits on backpressure, then run
again on the same file: every session is enqueued exactly once.

No worker drains the queue, so the producer pauses at the high-water mark
with sessions read and chunked. Before claims and chunks moved in one Redis
step, the paused producer had already claimed its next batch: killed there,
those sessions stayed in the dedupe set without a chunk, and the re-run
called them duplicates (lost for good). With ``LABELQ_INGEST_PROCESSES=2``
the file is split over two range processes, which must stop too: on the
parent's SIGTERM (forwarded) and on its death (SIGKILL; Linux's parent-death
signal).
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import orjson
import psutil
import pytest
import redis

from labelq.audit import audit
from labelq.hashing import content_hash
from labelq.settings import Settings
from labelq.synth import generate
from tests.support.chaos import record_result, wait_until
from tests.support.cli import labelq, labelq_started
from tests.support.helpers import claimed, queued_chunks, write_jsonl

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TASK = "session-label"
SESSIONS = 200
CHUNK = 10
EXIT_STOPPED = 3  # labelq.app.cli.common.EXIT_STOPPED, as documented in the README


def _env(processes: int, high_water: int) -> dict[str, str]:
    return {"LABELQ_CHUNK_SIZE": str(CHUNK), "LABELQ_QUEUE_HIGH_WATER_CHUNKS": str(high_water),
            "LABELQ_QUEUE_LOW_WATER_CHUNKS": "1", "LABELQ_BACKPRESSURE_POLL_S": "0.1",
            "LABELQ_INGEST_PROCESSES": str(processes), "LABELQ_INGEST_SPLIT_MIN_BYTES": "1",
            "LABELQ_LOG_FORMAT": "json"}


def _queued_hashes(settings: Settings, client: redis.Redis) -> Counter[str]:
    return Counter(s.content_hash for c in queued_chunks(settings, client, "teacher") for s in c.sessions)


def _gone(pids: list[psutil.Process]) -> bool:
    def alive(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    return not any(alive(p) for p in pids)


def _stop_during_pause_then_reingest(settings: Settings, client: redis.Redis, tmp_path: Path,
                                     sig: signal.Signals, processes: int) -> dict[str, object]:
    sessions = list(generate(SESSIONS, seed=1300 + processes))
    source = write_jsonl(tmp_path / "in.jsonl", sessions)
    expected = {content_hash(s) for s in sessions}
    started = time.monotonic()
    log_path, out_path = tmp_path / "ingest.log", tmp_path / "ingest.out"
    with log_path.open("wb") as log, out_path.open("wb") as out:
        producer = labelq_started(["ingest", str(source), "--json"], settings, stdout=out, stderr=log,
                                  env=_env(processes, high_water=2))
        try:
            # Every ingest process has chunks in hand and waits for room (no worker drains the queue).
            wait_until(lambda: log_path.read_bytes().count(b"backpressure_pause") >= processes, 60,
                       "the producer to pause on backpressure")
            assert producer.poll() is None
            children = psutil.Process(producer.pid).children(recursive=True)
            assert len(children) >= (processes if processes > 1 else 0)
            producer.send_signal(sig)
            status = producer.wait(timeout=60)
            wait_until(lambda: _gone(children), 120, "the range processes to exit")  # a bound, not a speed
        finally:
            if producer.poll() is None:
                producer.kill()
    before = _queued_hashes(settings, client)
    balance = audit(settings, client).tasks[TASK]
    # No claim without its chunk: everything in the dedupe set is in the queue, and counted.
    assert claimed(settings, client, TASK) == sum(before.values()) == balance.ingested
    assert balance.claimed_not_enqueued == 0 and balance.gap == 0
    first: dict[str, object] = {}
    if sig == signal.SIGKILL:
        assert status == -signal.SIGKILL
    else:
        assert status == EXIT_STOPPED, log_path.read_bytes()[-2000:]
        first = orjson.loads(out_path.read_bytes().splitlines()[-1])
        assert first["stopped"] is True and first["enqueued"] == sum(before.values())
        assert first["read"] == first["enqueued"] + first["duplicates"] + first["rejected_total"] + first["left"]
        assert int(first["left"]) > 0  # it had sessions in hand, and left them unclaimed
        assert b"stopped by SIGTERM" in log_path.read_bytes()
    assert 0 < sum(before.values()) < SESSIONS  # stopped mid-run

    rerun = labelq(["ingest", str(source), "--json"], settings, env=_env(processes, high_water=1000))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    second = orjson.loads(rerun.stdout.splitlines()[-1])
    after = _queued_hashes(settings, client)
    lost = len(expected - set(after))
    duplicates = sum(n - 1 for n in after.values())
    assert lost == 0 and duplicates == 0 and set(after) == expected
    assert second["enqueued"] == SESSIONS - sum(before.values()) and second["duplicates"] == sum(before.values())
    final = audit(settings, client)
    assert final.ok and final.tasks[TASK].ingested == SESSIONS == final.tasks[TASK].in_flight
    return {"lost": lost, "duplicates": duplicates, "seconds": round(time.monotonic() - started, 1),
            "enqueued_before": sum(before.values()), "left": first.get("left"),
            "reingest_enqueued": second["enqueued"], "reingest_duplicates": second["duplicates"]}


def _load(processes: int) -> str:
    split = f", split over {processes} range processes" if processes > 1 else ""
    return (f"{SESSIONS} sessions via `labelq ingest`{split}, chunks of {CHUNK}, high water 2 chunks, "
            "no worker draining")


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_during_a_backpressure_pause_then_reingest(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest,
        processes: int) -> None:
    result = _stop_during_pause_then_reingest(settings, redis_client, tmp_path, signal.SIGKILL, processes)
    name = "producer SIGKILL during a backpressure pause, then re-ingest"
    record_result(request, scenario=name + (f" ({processes} range processes)" if processes > 1 else ""),
                  load=_load(processes),
                  faults=f"SIGKILL while paused ({result['enqueued_before']} sessions enqueued), "
                         "then the same ingest again with room",
                  dead_lettered=0, **result)


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_during_a_backpressure_pause_then_reingest(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest,
        processes: int) -> None:
    result = _stop_during_pause_then_reingest(settings, redis_client, tmp_path, signal.SIGTERM, processes)
    name = "producer SIGTERM during a backpressure pause, then re-ingest"
    record_result(request, scenario=name + (f" ({processes} range processes)" if processes > 1 else ""),
                  load=_load(processes),
                  faults=f"SIGTERM while paused (exit 3 with its summary: {result['enqueued_before']} enqueued, "
                         f"{result['left']} left unclaimed), then the same ingest again with room",
                  dead_lettered=0, **result)
