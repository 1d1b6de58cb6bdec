"""Redis (AOF everysec) stopped mid-run, cleanly (SIGTERM) or hard (SIGKILL), and started again on its
data: the producer and the workers reconnect by themselves. After a clean stop nothing is lost; after a
SIGKILL Redis may have lost its last second of writes, so the same ingest is run again (what an operator
does after a crash), and every session ends labelled exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis
from pydantic import SecretStr

from labelq import keyspace
from labelq.audit import audit
from labelq.hashing import content_hash
from labelq.keyspace import Stat
from labelq.settings import Settings
from labelq.synth import generate
from tests.support.chaos import ROOT, Fleet, record_result, tally, tally_row, wait_until
from tests.support.helpers import write_jsonl
from tests.support.redis_process import RedisProcess
from tests.support.student import publish_adapter
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
pytest.importorskip("torch")

VISIBILITY_S = 10


def stats(client: redis.Redis, settings: Settings) -> dict[str, int]:
    try:
        raw = client.hgetall(keyspace.stats(settings, "session-label"))
    except redis.RedisError:
        return {}
    return {k.decode(): int(v) for k, v in raw.items()}  # type: ignore[union-attr]


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_redis_restart_mid_run_loses_nothing(
        kill: bool, settings: Settings, tiny_model: Path, tiny_adapters: dict[str, Path], tmp_path: Path,
        own_redis: RedisProcess, request: pytest.FixtureRequest) -> None:
    server = own_redis
    client = redis.Redis.from_url(server.url)
    sessions = list(generate(1200, seed=7201))
    settings = settings.model_copy(update={"redis_url": SecretStr(server.url), "chunk_size": 20,
                                           "curation_seed_size": 500, "visibility_timeout_s": VISIBILITY_S})
    publish_adapter(settings, client, tiny_adapters["style"], 1)
    env = worker_env(settings, LABELQ_VISIBILITY_TIMEOUT_S=str(VISIBILITY_S), LABELQ_CURATION_SEED_SIZE="500",
                     # A low high-water mark keeps the producer running (held by backpressure) across the restart.
                     LABELQ_QUEUE_HIGH_WATER_CHUNKS="6", LABELQ_QUEUE_LOW_WATER_CHUNKS="3",
                     LABELQ_BACKPRESSURE_POLL_S="0.1", LABELQ_TEACHER_BACKEND="replay",
                     LABELQ_TEACHER_REPLAY_LATENCY_S="0.05", LABELQ_STUDENT_BACKEND="transformers",
                     LABELQ_STUDENT_MODEL=str(tiny_model), LABELQ_STUDENT_ESCALATION_SHARE="0",
                     LABELQ_STUDENT_WAIT_S="0.5")
    source = write_jsonl(tmp_path / "in.jsonl", sessions)
    reingested = 0
    started = time.monotonic()
    try:
        with Fleet(env, tmp_path) as fleet, (tmp_path / "producer.log").open("wb") as producer_log:
            fleet.start("teacher", pool="prefork", concurrency=2)
            fleet.start("student")
            producer = subprocess.Popen([str(Path(sys.executable).parent / "labelq"), "ingest", str(source), "--json"],
                                        env=env, cwd=ROOT, stdout=producer_log, stderr=subprocess.STDOUT)
            wait_until(lambda: stats(client, settings).get(Stat.LABELLED_STUDENT, 0) >= 40, 180,
                       "the student to be labelling")
            before = stats(client, settings)
            assert producer.poll() is None, "the producer finished before the restart: raise the load"
            server.stop(kill=kill)  # SIGTERM: Redis fsyncs its AOF and exits; SIGKILL: up to 1 s is lost
            time.sleep(2.0)
            server.start()  # same port, same data dir: the AOF is replayed
            status = producer.wait(timeout=240)
            assert status == 0 or kill, status
            if kill:  # what an operator does after a crash: the same ingest again (dedupe keeps it exact)
                rerun = subprocess.run([str(Path(sys.executable).parent / "labelq"), "ingest", str(source), "--json"],
                                       env=env, cwd=ROOT, capture_output=True, timeout=240)
                assert rerun.returncode == 0, rerun.stderr[-2000:]
                reingested = orjson.loads(rerun.stdout.strip().splitlines()[-1])["enqueued"]
            expected = {content_hash(s) for s in sessions}
            wait_until(lambda: tally(settings, expected).done, 240, "every session to be labelled", poll_s=1)
            final = tally(settings, expected)
            balance = audit(settings, client).tasks["session-label"]
            assert all(p.poll() is None for ps in fleet.procs.values() for p in ps), "a worker died"
    finally:
        server.stop()
    produced = (tmp_path / "producer.log").read_bytes()
    assert b"redis_unavailable_retrying" in produced  # the producer met the outage and rode it out
    assert before[Stat.INGESTED] < len(sessions)  # the restart happened mid-ingest
    assert final.lost == 0 and final.duplicates == 0 and final.unexpected == 0
    # The tiny model rarely answers too long (escalation is off here): the only dead letters allowed.
    assert all(r.startswith("student_too_") for r in final.dead_reasons) and final.dead_lettered <= 12
    assert balance.ingested == len(sessions) and balance.gap == 0 and balance.in_flight == 0
    record_result(request, scenario=f"Redis {'SIGKILL' if kill else 'restart'} (AOF everysec) mid-run",
                  load=f"{len(sessions)} sessions via `labelq ingest` (backpressure at 6 chunks), "
                       "prefork teacher + student worker" + (", then the same ingest again" if kill else ""),
                  faults=f"redis-server {'killed (SIGKILL)' if kill else 'stopped (SIGTERM)'} for 2 s while "
                         "ingesting and labelling"
                         + (f"; the re-run enqueued {reingested} sessions Redis had lost" if kill else ""),
                  lost=final.lost, duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  ingested_before_restart=before[Stat.INGESTED], **tally_row(final))
