"""Claim, push and count in one Redis step (``enqueue.lua``): no claim without its chunk.

Against a real redis-server: the messages are the ones kombu pushes itself,
a conflict with another producer writes nothing, a retried call after a lost
reply pushes once, a Redis outage longer than the producer's patience leaves
no orphan claim, and ``labelq audit`` reports claims that were never enqueued.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from pydantic import SecretStr

from labelq import keyspace
from labelq.audit import audit
from labelq.dedupe import dedupe_keys
from labelq.errors import ServiceUnavailable
from labelq.hashing import chunk_id, content_hash
from labelq.keyspace import Stat
from labelq.queue.app import TASK_FOR_QUEUE, create_app
from labelq.queue.publish import ChunkPublisher, OutgoingChunk, envelope
from labelq.schemas import chunk_json
from labelq.settings import Settings
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.helpers import claimed, queued_chunks, write_jsonl
from tests.support.redis_process import RedisProcess

pytestmark = pytest.mark.integration

TASK = "session-label"


def _chunk(n: int = 2) -> tuple[OutgoingChunk, list[str]]:
    hashes = [uuid.uuid4().hex for _ in range(n)]
    cid = chunk_id(TASK, hashes)
    body = chunk_json(TASK, "seed", [(f"s{i}", h, orjson.dumps({"session_id": f"s{i}"})) for i, h in enumerate(hashes)])
    return OutgoingChunk(cid, TASK, n, body), hashes


def _without_ids(raw: bytes) -> dict[str, Any]:
    message = orjson.loads(raw)
    for key in ("id", "root_id"):
        message["headers"][key] = "-"
    for key in ("correlation_id", "delivery_tag"):
        message["properties"][key] = "-"
    return message  # type: ignore[no-any-return]


def test_the_message_is_what_kombu_pushes(settings: Settings, redis_client: redis.Redis) -> None:
    app = create_app(settings)
    chunk, _ = _chunk()
    key = keyspace.queue(settings, "teacher")
    with app.producer_pool.acquire(block=True) as producer:  # kombu's own path, as Celery publishes
        ours = envelope(app, "teacher", chunk, "origin@host")
        message = app.amqp.as_task_v2("tid", TASK_FOR_QUEUE["teacher"], args=(), kwargs={}, origin="origin@host",
                                      argsrepr=f"<chunk {chunk.chunk_id} task={TASK} sessions=2>", kwargsrepr="{}")
        body = b"[[" + chunk.body + b'],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
        producer.publish(body, exchange="", routing_key="teacher", content_type="application/json",
                         content_encoding="utf-8", headers=message.headers, delivery_mode=2,
                         declare=[app.amqp.queues["teacher"]], **message.properties)
    assert redis_client.llen(key) == 1
    assert _without_ids(ours) == _without_ids(redis_client.lpop(key))  # type: ignore[arg-type]


def test_enqueue_claims_pushes_and_counts_or_writes_nothing(settings: Settings, redis_client: redis.Redis) -> None:
    stats = keyspace.stats(settings, TASK)
    with ChunkPublisher(settings, create_app(settings), redis_client) as publisher:
        chunk, hashes = _chunk(3)
        assert publisher.enqueue(TASK, [("teacher", chunk)], hashes, duplicates=2) == set()
        assert claimed(settings, redis_client, TASK) == 3 and redis_client.llen(keyspace.queue(settings, "teacher")) == 1
        assert redis_client.hgetall(stats) == {Stat.INGESTED.encode(): b"3", Stat.DUPLICATES.encode(): b"2"}
        # Another producer took one of these since this one looked: nothing is written.
        other, fresh = _chunk(2)
        assert publisher.enqueue(TASK, [("teacher", other)], [*fresh, hashes[1]]) == {hashes[1]}
        assert claimed(settings, redis_client, TASK) == 3 and redis_client.llen(keyspace.queue(settings, "teacher")) == 1
        assert redis_client.hget(stats, Stat.INGESTED) == b"3"
    assert queued_chunks(settings, redis_client, "teacher")[0].chunk_id == chunk.chunk_id  # a worker decodes it


def test_an_enqueue_retried_after_a_lost_reply_pushes_and_counts_once(
        settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis ran the transaction but the reply was lost: the retry takes its second pushes back."""
    real_execute = redis.client.Pipeline.execute
    lost = []

    def reply_lost_once(self: redis.client.Pipeline, raise_on_error: bool = True) -> Any:
        result = real_execute(self, raise_on_error)
        if not lost:
            lost.append(result)
            raise redis.ConnectionError("connection reset by peer")
        return result

    monkeypatch.setattr(redis.client.Pipeline, "execute", reply_lost_once)
    chunk, hashes = _chunk(2)
    with ChunkPublisher(settings, create_app(settings), redis_client) as publisher:
        assert publisher.enqueue(TASK, [("student", chunk)], hashes) == set()  # not "taken by another"
    assert lost and redis_client.llen(keyspace.queue(settings, "student")) == 1
    assert redis_client.hget(keyspace.stats(settings, TASK), Stat.INGESTED) == b"2"


def test_a_conflict_takes_back_only_its_own_pushes(settings: Settings, redis_client: redis.Redis) -> None:
    """Messages already waiting in the queues stay, in order; the conflicting batch's go."""
    with ChunkPublisher(settings, create_app(settings), redis_client) as publisher:
        waiting = [_chunk(1) for _ in range(3)]
        for queue, (chunk, hashes) in zip(("teacher", "student", "teacher"), waiting, strict=True):
            assert publisher.enqueue(TASK, [(queue, chunk)], hashes) == set()
        mine = [_chunk(2) for _ in range(3)]
        hashes = [h for _, hs in mine for h in hs]
        assert publisher.enqueue(TASK, [("teacher", mine[0][0]), ("student", mine[1][0]), ("teacher", mine[2][0])],
                                 [*hashes, waiting[1][1][0]]) == {waiting[1][1][0]}
    assert [c.chunk_id for c in queued_chunks(settings, redis_client, "teacher")] == [
        waiting[0][0].chunk_id, waiting[2][0].chunk_id]
    assert [c.chunk_id for c in queued_chunks(settings, redis_client, "student")] == [waiting[1][0].chunk_id]
    assert claimed(settings, redis_client, TASK) == 3


def test_a_producer_racing_another_drops_what_the_other_took(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between its look at the dedupe set and its enqueue, another producer enqueued some sessions."""
    sessions = list(generate(30, seed=41))
    settings = settings.model_copy(update={"chunk_size": 10})
    taken = {content_hash(s) for s in sessions[5:15]}
    real_unseen = ChunkPublisher.unseen

    def stale(self: ChunkPublisher, task: str, hashes: Sequence[str]) -> list[bool]:
        answer = real_unseen(self, task, hashes)  # looked before the other producer...
        redis_client.sadd(dedupe_keys(settings, task).current.set_key,
                          *(bytes.fromhex(h) for h in hashes if h in taken))
        return answer  # ...which took its sessions just after

    monkeypatch.setattr(ChunkPublisher, "unseen", stale)
    summary = run_ingest(settings, [str(write_jsonl(tmp_path / "in.jsonl", sessions))], client=redis_client,
                         queue="teacher")
    queued = Counter(s.content_hash for c in queued_chunks(settings, redis_client, "teacher") for s in c.sessions)
    assert set(queued) == {content_hash(s) for s in sessions} - taken and max(queued.values()) == 1
    assert (summary.enqueued, summary.duplicates) == (20, 10)


def test_redis_outage_longer_than_patience_leaves_no_orphan_claim(
        settings: Settings, tmp_path: Path, own_redis: RedisProcess) -> None:
    server = own_redis
    client = redis.Redis.from_url(server.url)
    settings = settings.model_copy(update={
        "redis_url": SecretStr(server.url), "chunk_size": 10, "queue_high_water_chunks": 2,
        "queue_low_water_chunks": 1, "redis_outage_max_s": 0.5})
    sessions = list(generate(200, seed=42))
    source = str(write_jsonl(tmp_path / "in.jsonl", sessions))
    pauses: list[int] = []

    def stop_redis_once(queue: str, depth: int) -> None:  # the producer waits for room: Redis goes away
        pauses.append(depth)
        if len(pauses) == 1:
            server.stop()

    with pytest.raises(ServiceUnavailable, match="Redis unreachable"):
        run_ingest(settings, [source], client=client, queue="teacher", on_pause=stop_redis_once)
    server.start()  # same port and data (AOF)
    queued = [s.content_hash for c in queued_chunks(settings, client, "teacher") for s in c.sessions]
    assert len(queued) == 2 * settings.chunk_size
    # Every claim has its chunk, and the counts agree.
    assert claimed(settings, client, TASK) == len(queued)
    balance = audit(settings, client).tasks[TASK]
    assert balance.claimed_not_enqueued == 0 and balance.ingested == balance.in_flight == len(queued)

    roomy = settings.model_copy(update={"queue_high_water_chunks": 1000})
    rerun = run_ingest(roomy, [source], client=client, queue="teacher")
    assert (rerun.enqueued, rerun.duplicates) == (200 - len(queued), len(queued))
    every = Counter(s.content_hash for c in queued_chunks(settings, client, "teacher") for s in c.sessions)
    assert set(every) == {content_hash(s) for s in sessions} and max(every.values()) == 1
    assert audit(settings, client).ok


def test_audit_reports_claims_never_enqueued(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    """What a producer before claims and chunks moved together left behind when it was killed."""
    run_ingest(settings, [str(write_jsonl(tmp_path / "in.jsonl", list(generate(20, seed=43))))],
               client=redis_client, queue="teacher")
    assert audit(settings, redis_client).ok
    redis_client.sadd(dedupe_keys(settings, TASK).current.set_key, *(uuid.uuid4().bytes for _ in range(3)))
    report = audit(settings, redis_client)
    assert not report.ok
    assert report.tasks[TASK].claimed_not_enqueued == 3 and report.tasks[TASK].gap == 0
    # In the one set per task of labelq before buckets: claims beyond what was ingested outside the buckets.
    redis_client.sadd(keyspace.seen_legacy(settings, TASK), *(uuid.uuid4().bytes for _ in range(2)))
    assert audit(settings, redis_client).tasks[TASK].claimed_not_enqueued == 5
