"""Redis at a memory ceiling (``labelq.redis_memory``): the producer pauses at its share of maxmemory and
resumes when memory frees; the reserve is held while there is room and freed at the ceiling; status
and the audit still read a full Redis."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr
from structlog.testing import capture_logs

from labelq import keyspace
from labelq.audit import audit
from labelq.hashing import content_hash
from labelq.queue.inspect import decode_chunk_message
from labelq.redis_memory import ReservePolicy, keep_reserve, read_memory
from labelq.settings import Settings
from labelq.status import gather
from labelq.synth import generate
from producer.run import IngestSummary, run_ingest
from tests.support.helpers import wait_until, write_jsonl
from tests.support.redis_process import RedisProcess

pytestmark = pytest.mark.integration

MIB = 1 << 20


@pytest.fixture
def capped(settings: Settings, tmp_path: Path, own_redis: RedisProcess) -> tuple[Settings, redis.Redis, int]:
    """Settings on a private redis-server whose maxmemory is 6 MiB above what it uses empty; its client,
    that ceiling."""
    server = own_redis
    client = redis.Redis.from_url(server.url)
    ceiling = int(client.info("memory")["used_memory"]) + 6 * MIB
    client.config_set("maxmemory", ceiling)
    return settings.model_copy(update={"redis_url": SecretStr(server.url)}), client, ceiling


def _padded(n: int, seed: int) -> list[dict[str, Any]]:
    return [dict(s, notes="n" * 2000) for s in generate(n, seed=seed)]  # ~3 KB each, queued


def _settled_used_memory(client: redis.Redis) -> int:
    """``used_memory`` once two reads 2.5 s apart agree within 16 KiB."""
    reads: list[int] = []

    def settled() -> bool:
        reads.append(int(client.info("memory")["used_memory"]))
        return len(reads) > 1 and abs(reads[-1] - reads[-2]) < 16 * 1024

    wait_until(settled, 60, "Redis memory to settle", poll_s=2.5)
    return reads[-1]


def test_the_producer_pauses_at_its_share_of_maxmemory_and_resumes_when_memory_frees(
        capped: tuple[Settings, redis.Redis, int], tmp_path: Path) -> None:
    settings, client, ceiling = capped
    settings = settings.model_copy(update={
        "chunk_size": 20,
        "redis_memory_high_water": 0.5, "redis_memory_low_water": 0.4, "redis_memory_reserve_share": 0.0,
        "ingest_processes": 1})
    sessions = _padded(1500, seed=61)  # ~6 MiB of messages: more than the ceiling
    source = str(write_jsonl(tmp_path / "in.jsonl", sessions))
    queue = keyspace.queue(settings, "teacher")
    done: list[IngestSummary] = []
    with capture_logs() as logs:
        producer = threading.Thread(target=lambda: done.append(
            run_ingest(settings, [source], client=client, queue="teacher")))
        producer.start()
        try:
            wait_until(lambda: any(e["event"] == "backpressure_pause" and e.get("on") == "redis_memory" for e in logs),
                       60, "the producer to pause on Redis memory")
            paused = read_memory(client, keyspace.memory_reserve(settings))
            assert paused.max_bytes == ceiling and paused.used_bytes < ceiling  # paused before Redis was full
            assert client.llen(queue) * settings.chunk_size < len(sessions)
            # Workers drain: memory frees, the producer resumes and enqueues the rest.
            drained: list[bytes] = []
            while producer.is_alive() or client.llen(queue):
                item = client.rpop(queue)
                if item is not None:
                    drained.append(item)  # type: ignore[arg-type]
                else:
                    time.sleep(0.01)
        finally:
            producer.join(timeout=60)
    [summary] = done
    assert summary.enqueued == len(sessions) and summary.backpressure_paused_s > 0
    assert any(e["event"] == "backpressure_resume" and e.get("on") == "redis_memory" for e in logs)
    queued = Counter(s["content_hash"] for raw in drained for s in decode_chunk_message(raw)["sessions"])  # type: ignore[index]
    assert set(queued) == {content_hash(s) for s in sessions} and max(queued.values()) == 1


def test_the_reserve_is_held_with_room_freed_at_the_ceiling_and_status_still_reads(
        capped: tuple[Settings, redis.Redis, int], tmp_path: Path) -> None:
    settings, client, ceiling = capped
    settings = settings.model_copy(update={"redis_memory_reserve_share": 0.1})
    policy = ReservePolicy.from_settings(settings)
    held = keep_reserve(client, policy)  # room: made (one SETRANGE, no bytes sent)
    assert held.reserve_bytes == int(0.1 * ceiling) == client.strlen(policy.key)
    run_ingest(settings, [str(write_jsonl(tmp_path / "in.jsonl", _padded(100, seed=62)))], client=client,
               queue="teacher")
    # Now over its ceiling by half the reserve (under what Redis uses once the reserve is freed), measured once
    # the ingest's query buffer is given back (Redis trims a client's buffer after 2 s idle: a drop larger
    # than a small margin, which let the probe below through).
    used = _settled_used_memory(client)
    client.config_set("maxmemory", used - held.reserve_bytes // 2)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", "x")
    # Status and the audit only read: a full Redis still answers them.
    snapshot = gather(settings, client)
    assert snapshot.redis_memory is not None and snapshot.redis_memory.share is not None
    assert snapshot.redis_memory.share > 1 and snapshot.redis_memory.reserve_bytes == held.reserve_bytes
    assert audit(settings, client).ok
    freed = keep_reserve(client, policy)  # what a worker's sweep does at the ceiling
    assert freed.reserve_bytes == 0 and not freed.full and client.set("probe", "x")
    # Not made again until Redis is back below the low water with it.
    assert keep_reserve(client, policy).reserve_bytes == 0
