"""Student chunks that cannot be served yet wait off the queue KEDA scales on, and come back when they can
(``labelq.queue.parking``; real Redis, a real in-process Celery worker, a fake engine)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.audit import audit
from labelq.keyspace import AdapterFile, Stat
from labelq.metrics import QueueDepthCollector
from labelq.queue.app import create_app
from labelq.queue.inspect import decode_chunk_message, queue_depth
from labelq.queue.parking import UNPARK_BATCH, Parked, park, parked_depths, unpark
from labelq.queue.publish import ChunkPublisher, republish
from labelq.registry import Registry, release_parked
from labelq.settings import Settings
from labelq.status import gather
from labelq.store import open_store
from labelq.synth import generate
from tests.support.helpers import wait_until
from tests.support.ops_history import chunk_envelope
from tests.support.student import TASK, FakeEngine, publish_adapter, student_records
from tests.support.teacher import make_chunk
from workers.student import tasks as student_tasks
from workers.student.labeler import StudentRuntime

pytestmark = pytest.mark.integration


def take(settings: Settings, client: redis.Redis, queue: str = "student") -> str:
    """What kombu does when a worker takes the next message: off the list, into the unacked hash and index."""
    raw = client.rpop(keyspace.queue(settings, queue))
    assert isinstance(raw, bytes)
    tag = orjson.loads(raw)["properties"]["delivery_tag"]
    client.hset(keyspace.unacked(settings), tag, orjson.dumps([orjson.loads(raw), "", queue]))
    client.zadd(keyspace.unacked_index(settings), {tag: 1.0})
    return str(tag)


def chunk_ids(raws: list[bytes]) -> list[str]:
    found = [decode_chunk_message(raw) for raw in raws]
    return [str(c["chunk_id"]) for c in found if c is not None]


def test_park_moves_a_held_message_off_the_queue_in_one_step_unless_it_can_be_served(
        settings: Settings, redis_client: redis.Redis) -> None:
    queue, parked = keyspace.queue(settings, "student"), keyspace.parked(settings, "student", TASK)
    for seed in ("a", "b"):
        redis_client.lpush(queue, chunk_envelope(settings, "student", TASK, 2, seed=seed))
    adapter = Registry(settings, redis_client, open_store(settings)).serving_keys(TASK)
    tag = take(settings, redis_client)
    held = orjson.loads(redis_client.hget(keyspace.unacked(settings), tag))[0]  # type: ignore[arg-type]

    redis_client.set(adapter[1], 1)  # promoted meanwhile: it can be served, so it is not parked
    assert park(settings, redis_client, "student", TASK, tag, adapter) is Parked.SERVABLE
    assert redis_client.hexists(keyspace.unacked(settings), tag) and not redis_client.exists(parked)

    redis_client.delete(adapter[1])
    assert park(settings, redis_client, "student", TASK, tag, adapter) is Parked.PARKED
    assert not redis_client.hexists(keyspace.unacked(settings), tag)
    assert redis_client.zscore(keyspace.unacked_index(settings), tag) is None  # kombu never restores it
    assert [orjson.loads(m) for m in redis_client.lrange(parked, 0, -1)] == [held]  # as kombu queues it
    assert redis_client.llen(queue) == 1  # only work that can be done is on the queue
    assert park(settings, redis_client, "student", TASK, tag, adapter) is Parked.NOT_HELD  # moved once


def test_unpark_puts_every_parked_chunk_next_in_line_oldest_first(
        settings: Settings, redis_client: redis.Redis) -> None:
    queue, parked = keyspace.queue(settings, "student"), keyspace.parked(settings, "student", TASK)
    redis_client.lpush(queue, chunk_envelope(settings, "student", TASK, 1, seed="newer work"))
    n = UNPARK_BATCH + 7  # more than one call moves
    for i in range(n):
        redis_client.lpush(parked, chunk_envelope(settings, "student", TASK, 1, seed=f"p{i}"))
    oldest_first = list(reversed(chunk_ids(redis_client.lrange(parked, 0, -1))))
    assert unpark(settings, redis_client, "student", TASK) == n
    assert not redis_client.exists(parked) and redis_client.llen(queue) == n + 1
    taken = [redis_client.rpop(queue) for _ in range(n + 1)]  # the order workers take them in
    assert chunk_ids(taken) == [*oldest_first, *chunk_ids(taken[-1:])]
    assert unpark(settings, redis_client, "student", TASK) == 0


@pytest.fixture
def fake_student(settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[FakeEngine]:
    """The real student task, its engine a fake (the worker process's runtime, made here)."""
    engine = FakeEngine("fake-base")
    runtime = StudentRuntime(settings, open_store(settings), redis_client, backend_factory=lambda s: engine)
    monkeypatch.setattr(student_tasks, "_RUNTIME", runtime)
    yield engine


def adapter_dir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / AdapterFile.CONFIG).write_text(json.dumps({"r": 8}))
    (folder / AdapterFile.WEIGHTS).write_bytes(b"\0" * 64)
    return folder


def test_a_student_without_an_adapter_parks_its_chunks_and_a_promotion_brings_them_back(
        settings: Settings, redis_client: redis.Redis, fake_student: FakeEngine, tmp_path: Path) -> None:
    from labelq.queue.worker import worker_thread

    app = create_app(settings)
    student_tasks.register(app)
    sessions = list(generate(18, seed=41))
    for start in range(0, 18, 6):
        chunk = make_chunk(sessions[start:start + 6], route="steady")
        republish(settings, app, redis_client, "student", chunk, chunk.sessions)
    redis_client.hincrby(keyspace.stats(settings, TASK), Stat.INGESTED, 18)  # as the producer counted them
    parked = keyspace.parked(settings, "student", TASK)
    with worker_thread(app, ["student"]):
        wait_until(lambda: redis_client.llen(parked) == 3, 60, "the chunks to be parked")
        # KEDA's signal (the queue's length) says there is nothing to do; no engine call was made.
        assert queue_depth(settings, redis_client, "student") == 0
        assert not redis_client.hlen(keyspace.unacked(settings)) and fake_student.calls == 0
        snapshot, report = gather(settings, redis_client), audit(settings, redis_client)
        assert snapshot.tasks[TASK].parked_chunks == 3 and snapshot.totals.queued_chunks == 0
        assert report.ok and report.tasks[TASK].in_flight == 18  # parked is in flight, nothing lost
        publish_adapter(settings, redis_client, adapter_dir(tmp_path / "adapter"), 1)  # promote: unpark
        wait_until(lambda: int(redis_client.hget(keyspace.stats(settings, TASK), Stat.LABELLED_STUDENT) or 0)
                   == 18, 60, "the parked chunks to be labelled once promoted")
    assert not redis_client.exists(parked) and fake_student.calls == 3
    assert sorted(r.session_id for r in student_records(settings)) == sorted(s["session_id"] for s in sessions)
    report = audit(settings, redis_client)
    assert report.ok and report.tasks[TASK].in_flight == 0 and report.tasks[TASK].labelled_student == 18


def test_the_sweep_moves_back_what_a_crash_left_parked_and_only_that(
        settings: Settings, redis_client: redis.Redis) -> None:
    store = open_store(settings)
    registry = Registry(settings, redis_client, store)
    tasks = ("has-adapter", "no-adapter")
    for task in tasks:
        redis_client.sadd(keyspace.task_registry(settings), task)
        redis_client.lpush(keyspace.parked(settings, "student", task),
                           chunk_envelope(settings, "student", task, 2, seed=task))
    # A pointer written without its unpark (the promoting process died in between).
    redis_client.set(registry.serving_keys("has-adapter")[1], 1)
    assert release_parked(settings, redis_client, store) == {"has-adapter": 1}
    assert parked_depths(settings, redis_client, tasks) == {"no-adapter": 1}
    assert queue_depth(settings, redis_client, "student") == 1
    # Allowed to label with the bare base model, every task can be served.
    allowed = settings.model_copy(update={"student_allow_base_model": True})
    assert release_parked(allowed, redis_client, store) == {"no-adapter": 1}
    assert parked_depths(settings, redis_client, tasks) == {} and queue_depth(settings, redis_client, "student") == 2


def test_metrics_show_ready_work_and_parked_chunks_over_one_pool(
        settings: Settings, redis_client: redis.Redis) -> None:
    pytest.importorskip("prometheus_client")
    redis_client.lpush(keyspace.queue(settings, "student"), chunk_envelope(settings, "student", TASK, 1))
    redis_client.sadd(keyspace.task_registry(settings), TASK)
    for seed in ("a", "b"):
        redis_client.lpush(keyspace.parked(settings, "student", TASK),
                           chunk_envelope(settings, "student", TASK, 1, seed=seed))

    class Collector(QueueDepthCollector):
        REDIS_CLIENT_NAME = f"labelq-metrics-{settings.redis_key_prefix.strip(':')}"  # this test's alone

    collector = Collector(settings)
    for _ in range(5):  # scrapes reuse the pool: no new connection each
        families = {f.name: {tuple(s.labels.values()): s.value for s in f.samples} for f in collector.collect()}
    assert families["labelq_queue_depth"][("student",)] == 1
    assert families["labelq_parked_chunks"] == {(TASK,): 2}
    named = [c for c in redis_client.client_list() if c.get("name") == Collector.REDIS_CLIENT_NAME]
    assert 1 <= len(named) <= QueueDepthCollector.MAX_REDIS_CONNECTIONS


def test_parked_chunks_hold_their_producer_like_queued_ones(settings: Settings, redis_client: redis.Redis) -> None:
    """Parked chunks still take Redis memory: the producer's backpressure counts them with the queue."""
    settings = settings.model_copy(update={"queue_high_water_chunks": 3, "queue_low_water_chunks": 1})
    parked = keyspace.parked(settings, "student", TASK)
    for seed in ("a", "b", "c"):
        redis_client.lpush(parked, chunk_envelope(settings, "student", TASK, 1, seed=seed))
    pauses: list[int] = []

    def on_pause(queue: str, depth: int) -> None:
        pauses.append(depth)
        unpark(settings, redis_client, "student", TASK)  # moved back ...
        redis_client.ltrim(keyspace.queue(settings, "student"), 0, 0)  # ... and two of them taken

    with ChunkPublisher(settings, create_app(settings), redis_client, on_pause=on_pause) as publisher:
        publisher.wait_for_room("student", 1, task=TASK)  # another task's chunks would not count
        assert pauses == [3] and publisher.queue_depth("student", TASK) == 1
        publisher.wait_for_room("student", 1, task="another-task")
        assert pauses == [3]


def test_a_claim_checked_chunk_parks_unread_and_its_missing_payload_is_dead_lettered_once_served(
        settings: Settings, redis_client: redis.Redis, fake_student: FakeEngine, tmp_path: Path) -> None:
    """The adapter check comes before the payloads are read: a parked chunk has written nothing (no dead
    letter for a lost payload while its message still carries that session), and the audit balances
    throughout."""
    from labelq.hashing import content_hash
    from labelq.queue.worker import worker_thread
    from producer.run import run_ingest
    from tests.support.helpers import dead_letters, write_jsonl

    s = settings.model_copy(update={"claim_check_bytes": 2_000, "chunk_size": 4})
    sessions = list(generate(4, seed=43))
    for session in sessions:
        session["attachment"] = "x" * 3_000  # claim-checked: the message carries references
    run_ingest(s, [str(write_jsonl(tmp_path / "in.jsonl", sessions))], queue="student", client=redis_client)
    store = open_store(s)
    store.delete(keyspace.payload(TASK, content_hash(sessions[0])))  # lost while the chunk waits
    app = create_app(s)
    student_tasks.register(app)
    parked = keyspace.parked(s, "student", TASK)
    with worker_thread(app, ["student"]):
        wait_until(lambda: redis_client.llen(parked) == 1, 60, "the chunk to be parked")
        report = audit(s, redis_client)
        assert dead_letters(s, "student") == [] and report.ok and report.tasks[TASK].in_flight == 4
        publish_adapter(s, redis_client, adapter_dir(tmp_path / "adapter"), 1)  # promote: unpark
        wait_until(lambda: int(redis_client.hget(keyspace.stats(s, TASK), Stat.LABELLED_STUDENT) or 0) == 3,
                   60, "the chunk to be labelled once promoted")
    [letter] = dead_letters(s, "student")
    assert letter["session_id"] == sessions[0]["session_id"] and letter["reason"] == "payload_missing"
    report = audit(s, redis_client)
    assert report.ok and report.tasks[TASK].dead_lettered == 1 and report.tasks[TASK].in_flight == 0
