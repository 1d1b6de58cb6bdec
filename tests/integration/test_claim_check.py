"""Large sessions kept out of Redis (claim check) and queues bounded in bytes, on a real redis-server and the
local store: ingest, real teacher workers, the chunk task's resolution in this process (a missing or corrupt
payload, the store gone), hand-on and redrive keeping references, and pruning by age."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.audit import audit
from labelq.deadletter import LetterFilter
from labelq.hashing import content_hash
from labelq.keyspace import Stat
from labelq.outcomes import ChunkOutcome
from labelq.payloads import prune
from labelq.queue.app import STUDENT_TASK, TEACHER_TASK, create_app
from labelq.queue.inspect import decode_chunk_message, queue_bytes
from labelq.queue.publish import republish
from labelq.queue.task import ChunkTask, register_chunk_task
from labelq.redrive import redrive
from labelq.schemas import ChunkMessage
from labelq.settings import Settings
from labelq.status import gather
from labelq.store import open_store
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.helpers import dead_letters, queued_chunks, wait_until, write_jsonl
from tests.support.student import FakeEngine
from tests.support.teacher import REPLAY_RATE_LIFTED, REPLAY_UNLIMITED, teacher_records
from tests.support.worker_procs import celery_workers, worker_env
from workers.student.labeler import StudentRuntime, run_student_chunk
from workers.teacher.tasks import run_teacher_chunk

pytestmark = pytest.mark.integration
TASK = "session-label"
MB = 1_000_000


def sessions_of(n: int, seed: int, pad: int) -> list[dict[str, Any]]:
    """Synthetic sessions, each with an ``attachment`` of ``pad`` bytes (a page snapshot, say)."""
    out = list(generate(n, seed=seed))
    for s in out:
        s["attachment"] = "x" * pad
    return out


def raw_messages(client: redis.Redis, settings: Settings, queue: str) -> list[bytes]:
    return list(client.lrange(keyspace.queue(settings, queue), 0, -1))


def ingest(settings: Settings, client: redis.Redis, tmp_path: Path, sessions: list[dict[str, Any]],
           queue: str = "teacher") -> Any:
    summary = run_ingest(settings, [str(write_jsonl(tmp_path / f"in-{queue}.jsonl", sessions))],
                         queue=queue, client=client)
    assert summary.enqueued == len(sessions)
    return summary


def test_sessions_of_a_megabyte_stay_out_of_redis_and_workers_label_them_from_the_store(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    # 16 MB of sessions against a 256 KiB byte mark: only references can fit.
    settings = settings.model_copy(update={
        "chunk_size": 4, "max_session_bytes": 2 * MB,
        "queue_high_water_bytes": 256 << 10, "queue_low_water_bytes": 128 << 10})
    big, small = sessions_of(16, seed=71, pad=MB), list(generate(8, seed=72))
    summary = ingest(settings, redis_client, tmp_path, big + small)

    assert summary.backpressure_paused_s == 0  # references are small: the queue never neared its mark
    assert queue_bytes(settings, redis_client, "teacher") <= settings.queue_high_water_bytes
    assert sum(len(m) for m in raw_messages(redis_client, settings, "teacher")) < 64 << 10
    store = open_store(settings)
    items = {s.session_id: s for c in queued_chunks(settings, redis_client, "teacher") for s in c.sessions}
    for s in big:  # by reference, the object written before the enqueue, byte for byte as read
        item = items[s["session_id"]]
        assert item.payload is None and item.payload_ref == keyspace.payload(TASK, content_hash(s))
        assert store.get_bytes(item.payload_ref) == orjson.dumps(s)
    for s in small:  # inline, as before
        assert items[s["session_id"]].payload == s and items[s["session_id"]].payload_ref is None
    assert len(list(store.list(keyspace.payloads_prefix()))) == len(big)

    env = worker_env(settings, LABELQ_TEACHER_REPLAY_LATENCY_S="0", **REPLAY_RATE_LIFTED)
    with celery_workers(env, "teacher", 1, tmp_path):
        wait_until(lambda: gather(settings, redis_client).tasks[TASK].labelled_teacher == 24, 90,
                   "every session to be labelled")
    by_id = {s["session_id"]: s["_reference"]["label"] for s in big + small}
    records = teacher_records(settings)
    assert sorted(r.session_id for r in records) == sorted(by_id)
    assert all(r.label == by_id[r.session_id] for r in records)  # the replay teacher read each payload
    inputs = {row["session_id"]: row["payload"] for k in store.list(keyspace.inputs_prefix("teacher", TASK))
              for row in map(orjson.loads, store.get_bytes(k).splitlines())}
    assert inputs[big[0]["session_id"]] == big[0]  # curation's inputs hold the session, not a reference
    balance = audit(settings, redis_client).tasks[TASK]
    assert balance.gap == 0 and balance.dead_lettered == 0 and balance.labelled == 24


def test_byte_backpressure_holds_a_queue_under_its_byte_mark(
        settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    # Sessions just under the claim-check size travel inline: only the byte mark can hold the queue
    # (the chunk mark is out of reach).
    settings = settings.model_copy(update={
        "chunk_size": 4, "queue_high_water_bytes": 1 << 20, "queue_low_water_bytes": 512 << 10})
    sessions = sessions_of(48, seed=73, pad=30_000)
    assert all(len(orjson.dumps(s)) < settings.claim_check_bytes for s in sessions)
    key = keyspace.queue(settings, "teacher")
    stop = threading.Event()
    drained: list[bytes] = []
    peak = [0]

    def slow_consumer() -> None:
        while not stop.is_set() or redis_client.llen(key):
            peak[0] = max(peak[0], int(redis_client.memory_usage(key, samples=0) or 0))
            if (item := redis_client.rpop(key)) is not None:
                drained.append(item)
            time.sleep(0.05)

    consumer = threading.Thread(target=slow_consumer)
    consumer.start()
    try:
        summary = ingest(settings, redis_client, tmp_path, sessions)
    finally:
        stop.set()
        consumer.join(timeout=60)
    assert summary.backpressure_paused_s > 0
    assert sum(len(m) for m in drained) > 1.5 * settings.queue_high_water_bytes  # more went through than fits
    assert 0 < peak[0] <= settings.queue_high_water_bytes
    assert len(drained) == summary.chunks == 12


def _app(settings: Settings, calls: list[ChunkMessage] | None = None) -> Any:
    """A Celery app whose teacher task runs the teacher's chunk code in this process (replay teacher)."""
    app = create_app(settings)

    def run(job: ChunkTask, chunk: ChunkMessage) -> ChunkOutcome:
        if calls is not None:
            calls.append(chunk)
        return run_teacher_chunk(job.settings, job.store, job.redis, chunk,
                                 requeue=lambda c, items: job.republish("teacher", c, items))

    register_chunk_task(app, TEACHER_TASK, "teacher", run)
    return app


def _take(settings: Settings, client: redis.Redis, queue: str = "teacher") -> list[dict[str, Any]]:
    """Every waiting chunk (wire dict), taken off the queue as a worker takes it."""
    out = []
    while (raw := client.rpop(keyspace.queue(settings, queue))) is not None:
        chunk = decode_chunk_message(raw)
        assert chunk is not None
        out.append(chunk)
    return out


@pytest.fixture
def replay(settings: Settings) -> Settings:
    return settings.model_copy(update={**REPLAY_UNLIMITED, "chunk_size": 4, "claim_check_bytes": 2_000,
                                       "outage_backoff_base_s": 0.01, "outage_backoff_max_s": 0.01})


def test_a_missing_or_corrupt_payload_is_dead_lettered_with_its_reason_and_the_rest_labelled(
        replay: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    sessions = sessions_of(4, seed=74, pad=3_000)
    ingest(replay, redis_client, tmp_path, sessions)
    store = open_store(replay)
    gone, bent = (keyspace.payload(TASK, content_hash(s)) for s in sessions[:2])
    store.delete(gone)  # past its retention, or lost
    store.put_bytes(bent, orjson.dumps(sessions[3]))  # another session's bytes under this key
    [wire] = _take(replay, redis_client)
    calls: list[ChunkMessage] = []
    app = _app(replay, calls)
    for _ in range(2):  # a redelivery commits nothing twice
        result = app.tasks[TEACHER_TASK](wire)
    assert result == {"labelled": 2, "dead_lettered": 2, "handed_back": 0, "model": "replay",
                      "usd": result["usd"], "input_tokens": result["input_tokens"],
                      "output_tokens": result["output_tokens"]}
    assert [s.session_id for s in calls[0].sessions] == [s["session_id"] for s in sessions[2:]]
    letters = {d["session_id"]: d for d in dead_letters(replay, "teacher")}
    assert letters[sessions[0]["session_id"]]["reason"] == "payload_missing"
    assert gone in letters[sessions[0]["session_id"]]["detail"]
    assert letters[sessions[1]["session_id"]]["reason"] == "payload_corrupt"
    assert len(letters) == 2 and all(d["payload"] is None for d in letters.values())
    balance = audit(replay, redis_client).tasks[TASK]
    assert (balance.labelled, balance.dead_lettered, balance.gap) == (2, 2, 0)

    # A chunk none of whose payloads can be read: each dead-lettered, the chunk done without a run.
    more = sessions_of(2, seed=75, pad=3_000)
    ingest(replay, redis_client, tmp_path, more)
    for s in more:
        store.delete(keyspace.payload(TASK, content_hash(s)))
    [wire] = _take(replay, redis_client)
    assert app.tasks[TEACHER_TASK](wire) == {"status": "payload_missing", "dead_lettered": 2}
    assert len(calls) == 2 and audit(replay, redis_client).tasks[TASK].gap == 0


def test_the_store_gone_while_resolving_is_an_outage_waited_out_and_nothing_is_dead_lettered(
        replay: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    sessions = sessions_of(4, seed=76, pad=3_000)
    ingest(replay, redis_client, tmp_path, sessions)
    [wire] = _take(replay, redis_client)
    app = _app(replay)
    assert app.tasks[TEACHER_TASK].store  # a running worker: its store is open
    root = Path(replay.effective_store_url.removeprefix("file://"))
    aside = root.with_name("store-aside")
    root.rename(aside)  # the volume unmounted or moved: the store's root is not there
    try:
        with pytest.raises(Exception) as rejected:
            app.tasks[TEACHER_TASK](wire)
        assert type(rejected.value).__name__ == "Reject" and rejected.value.requeue  # back to the queue
        waiting = gather(replay, redis_client).waiting["teacher"]
        assert (waiting.on, waiting.kind) == ("store", "outage") and "not a directory" in waiting.detail
        chunk = ChunkMessage.decode(wire)
        attempts = keyspace.chunk_attempts(replay, "teacher", chunk.chunk_id)
        assert int(redis_client.get(attempts) or 0) == 0  # not a failed delivery
    finally:
        aside.rename(root)
    assert app.tasks[TEACHER_TASK](wire)["labelled"] == 4
    assert dead_letters(replay, "teacher") == [] and not gather(replay, redis_client).waiting


def _wire_sessions(raw: bytes) -> list[dict[str, Any]]:
    chunk = decode_chunk_message(raw)
    assert chunk is not None
    sessions: list[dict[str, Any]] = chunk["sessions"]
    return sessions


def test_hand_back_escalation_bisection_and_redrive_keep_the_reference(
        replay: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = replay.model_copy(update={"student_allow_base_model": True, "student_confidence_threshold": 0.95,
                                         "student_escalation_share": 1.0, "max_attempts": 1})
    sessions = sessions_of(4, seed=77, pad=3_000)
    refs = {content_hash(s): keyspace.payload(TASK, content_hash(s)) for s in sessions}
    ingest(settings, redis_client, tmp_path, sessions, queue="student")
    app = create_app(settings)
    runtime = StudentRuntime(settings, open_store(settings), redis_client,
                             backend_factory=lambda s: FakeEngine("fake"))  # answers at confidence 0.9
    register_chunk_task(app, STUDENT_TASK, "student", lambda job, chunk: run_student_chunk(
        runtime, chunk, escalate=lambda c, items: job.republish("teacher", c, items, route="escalation")))
    [wire] = _take(settings, redis_client, "student")

    # Escalation: the student read the payloads from the store; the teacher gets the references back.
    assert app.tasks[STUDENT_TASK](wire)["escalated"] == 4
    [escalated] = raw_messages(redis_client, settings, "teacher")
    assert [(s.get("payload_ref"), "payload" in s) for s in _wire_sessions(escalated)] == \
        [(refs[content_hash(s)], False) for s in sessions]

    # A teacher hand-back (republish of resolved sessions) keeps them too.
    [taken] = _take(settings, redis_client)
    resolved = ChunkMessage.decode(taken).model_copy(update={"sessions": [
        item.model_copy(update={"payload": s}) for item, s in zip(ChunkMessage.decode(taken).sessions, sessions,
                                                                    strict=True)]})
    republish(settings, app, redis_client, "teacher", resolved, resolved.sessions)
    [handed] = raw_messages(redis_client, settings, "teacher")
    assert all("payload" not in s and s["payload_ref"] for s in _wire_sessions(handed))

    # Bisection of a chunk that keeps failing: the halves carry the references; a lone session is
    # dead-lettered with its payload read back from the store, and a redrive sends the reference again.
    failing = create_app(settings)

    def crash(job: ChunkTask, chunk: ChunkMessage) -> ChunkOutcome:  # never reached: each delivery below
        raise RuntimeError("this session kills its worker")  # is one past max_attempts already

    register_chunk_task(failing, TEACHER_TASK, "teacher", crash)
    for _ in range(12):
        wires = _take(settings, redis_client)
        if not wires:
            break
        for w in wires:
            redis_client.set(keyspace.chunk_attempts(settings, "teacher", w["chunk_id"]), settings.max_attempts)
            failing.tasks[TEACHER_TASK](w)
            assert all("payload" not in s for m in raw_messages(redis_client, settings, "teacher")
                       for s in _wire_sessions(m))
    letters = dead_letters(settings, "teacher")
    assert sorted(d["content_hash"] for d in letters) == sorted(refs)
    assert all(d["reason"] == "poison_chunk" and d["payload"] == next(s for s in sessions
               if content_hash(s) == d["content_hash"]) for d in letters)
    summary = redrive(settings, open_store(settings), redis_client, LetterFilter(stage="teacher"), app=app)
    assert summary.redriven == 4
    sent = [s for m in raw_messages(redis_client, settings, "teacher") for s in _wire_sessions(m)]
    assert sorted(s["payload_ref"] for s in sent) == sorted(refs.values()) and all("payload" not in s for s in sent)
    for w in _take(settings, redis_client):
        assert _app(settings).tasks[TEACHER_TASK](w)["labelled"] >= 1
    assert audit(settings, redis_client).tasks[TASK].gap == 0
    stats = redis_client.hgetall(keyspace.stats(settings, TASK))
    assert int(stats[Stat.LABELLED_TEACHER.encode()]) == 4


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_prune_deletes_payloads_past_their_retention(kind: str, settings: Settings, redis_client: redis.Redis,
                                                     tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if kind == "s3":
        settings = settings.model_copy(update={
            "store_url": f"s3://{request.getfixturevalue('s3_bucket')}/run",
            "s3_endpoint_url": request.getfixturevalue("s3_endpoint")})
    settings = settings.model_copy(update={"claim_check_bytes": 2_000, "claim_check_retention_days": 30})
    sessions = sessions_of(6, seed=78, pad=3_000)
    ingest(settings, redis_client, tmp_path, sessions)
    store = open_store(settings)
    keys = sorted(store.list(keyspace.payloads_prefix()))
    other = keyspace.labels("teacher", TASK, "c1")
    store.put_bytes(other, b"{}\n")  # not a payload: never pruned
    now = time.time()
    if kind == "local":  # two payloads last written 31 days ago
        root = Path(settings.effective_store_url.removeprefix("file://"))
        for k in keys[:2]:
            os.utime(root / k, (now - 31 * 86_400, now - 31 * 86_400))
        expected_gone = keys[:2]
    else:  # S3 keeps its own write times: prune as if 31 days had passed
        now += 31 * 86_400
        expected_gone = keys
    dry = prune(settings, store, dry_run=True, now=now)
    assert (dry.deleted, dry.kept) == (len(expected_gone), len(keys) - len(expected_gone))
    assert sorted(store.list(keyspace.payloads_prefix())) == keys
    parked = prune(settings, store, now=now, keep_tasks=[TASK])  # a task whose chunks wait parked: kept
    assert (parked.deleted, parked.kept) == (0, len(keys))
    done = prune(settings, store, now=now)
    assert done.deleted == len(expected_gone) and done.deleted_bytes > 3_000 * len(expected_gone)
    assert sorted(store.list(keyspace.payloads_prefix())) == sorted(set(keys) - set(expected_gone))
    assert store.exists(other)
