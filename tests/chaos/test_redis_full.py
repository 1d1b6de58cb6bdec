"""A teacher worker started against a full Redis (``maxmemory``, ``noeviction``) starts and drains it.

The queue is filled until Redis refuses the producer, then the ceiling is lowered under what Redis
holds (an operator sizing it down, or a Redis restarted on a smaller box): every write is refused.
Stock kombu dies there as the worker starts (``OutOfMemoryError`` in ``restore_visible``); here the
worker frees the memory reserve the producer left (``labelq.redis_memory``), takes the chunks and
labels every session exactly once, and the reserve is held again once Redis has room.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from labelq import keyspace
from labelq.audit import audit
from labelq.errors import ServiceUnavailable
from labelq.hashing import content_hash
from labelq.keyspace import Stat
from labelq.queue.app import create_app
from labelq.queue.publish import ChunkPublisher
from labelq.redis_memory import read_memory
from labelq.settings import Settings
from labelq.status import gather
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.chaos import Fleet, record_result, tally, tally_row, wait_until
from tests.support.helpers import write_jsonl
from tests.support.redis_process import RedisProcess
from tests.support.teacher import REPLAY_RATE_LIFTED
from tests.support.worker_procs import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
MIB = 1 << 20
MEMORY = {"redis_memory_high_water": 1.0, "redis_memory_low_water": 0.9,  # the producer fills it to the brim
          "redis_memory_reserve_share": 0.1}


def test_a_worker_started_against_a_full_redis_starts_and_drains_it(
        settings: Settings, tmp_path: Path, own_redis: RedisProcess, request: pytest.FixtureRequest) -> None:
    server = own_redis
    client = redis.Redis.from_url(server.url)
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 24 * MIB)
    settings = settings.model_copy(update={"redis_url": SecretStr(server.url), "chunk_size": 20,
                                           "ingest_processes": 1, "redis_outage_max_s": 1.0, **MEMORY})
    reserve = keyspace.memory_reserve(settings)
    with ChunkPublisher(settings, create_app(settings), client) as publisher:
        assert publisher.redis_memory().reserve_bytes > 0  # what a producer holds while there is room
    sessions = [dict(s, notes="n" * 4000) for s in generate(8000, seed=7301)]  # ~7 KB queued each
    with pytest.raises(ServiceUnavailable, match="maxmemory"):
        run_ingest(settings, [str(write_jsonl(tmp_path / "in.jsonl", sessions))], client=client, queue="teacher")
    ingested = int(client.hget(keyspace.stats(settings, "session-label"), Stat.INGESTED) or 0)
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 64 * 1024)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", "x")
    full = gather(settings, client).redis_memory
    assert full is not None and full.share is not None and full.share > 1
    env = worker_env(settings, LABELQ_TEACHER_BACKEND="replay", LABELQ_TEACHER_REPLAY_LATENCY_S="0.001",
                     LABELQ_CURATION_SEED_SIZE="100000", **REPLAY_RATE_LIFTED,
                     **{f"LABELQ_{k.upper()}": str(v) for k, v in MEMORY.items()})
    expected = {content_hash(s) for s in sessions[:ingested]}
    started = time.monotonic()
    with Fleet(env, tmp_path) as fleet:
        worker = fleet.start("teacher", pool="prefork", concurrency=2)
        wait_until(lambda: tally(settings, expected).done or worker.poll() is not None, 120,
                   "every session to be labelled", poll_s=1)
        assert worker.poll() is None, fleet.logs()[-3000:]
        wait_until(lambda: client.strlen(reserve) > 0, 30, "the reserve to be held again")
        logs = fleet.logs()
    final = tally(settings, expected)
    balance = audit(settings, client).tasks["session-label"]
    assert b"restore_refused_out_of_memory" in logs and b"redis_memory_reserve_released" in logs
    assert ingested > 1000 and final.lost == 0 and final.duplicates == 0 and final.dead_lettered == 0
    assert balance.ingested == ingested and balance.gap == 0 and balance.in_flight == 0
    after = read_memory(client, reserve)
    assert not after.full and client.llen(keyspace.queue(settings, "teacher")) == 0
    record_result(request, scenario="teacher worker started against a full Redis (maxmemory, noeviction)",
                  load=f"{ingested} sessions of ~5 KB queued until Redis refused the producer",
                  faults="maxmemory then lowered under what Redis held: every write refused as the worker "
                         "starts",
                  lost=final.lost, duplicates=final.duplicates, seconds=round(time.monotonic() - started, 1),
                  **tally_row(final))
