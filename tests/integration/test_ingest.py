"""The producer against a real redis-server and the local / S3 stores."""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from labelq import keyspace
from labelq.errors import ServiceUnavailable
from labelq.hashing import chunk_id
from labelq.queue.inspect import queue_depth
from labelq.queue.publish import ChunkPublisher
from labelq.settings import Settings
from labelq.spec import BUILTIN_DIR
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.helpers import (
    claimed,
    dead_letters,
    queued_chunks,
    queued_session_ids,
    write_jsonl,
)

pytestmark = pytest.mark.integration

BAD_LINES = [
    b"{broken",
    b"[1,2,3]",
    b'{"no_id": true}',
    b'{"session_id": {"nested": 1}}',
    b"\xff\xfe\xfd",
    b'{"session_id": "deep", "x": ' + b"[" * 100 + b"]" * 100 + b"}",
]


def test_counts_dead_letters_and_messages(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    sessions = list(generate(150, seed=1))
    path = write_jsonl(tmp_path / "in.jsonl", sessions + sessions[:10], BAD_LINES)
    summary = run_ingest(settings, [str(path)], client=redis_client)

    assert summary.read == 166
    assert summary.enqueued == 150 and summary.duplicates == 10
    assert dict(summary.rejected) == {"invalid_json": 1, "not_an_object": 1, "missing_id": 1,
                                      "invalid_id": 1, "invalid_utf8": 1, "too_deep": 1}
    chunks = queued_chunks(settings, redis_client, "teacher")
    assert sum(len(c.sessions) for c in chunks) == 150
    assert {s.session_id for c in chunks for s in c.sessions} == {s["session_id"] for s in sessions}
    for c in chunks:  # chunk ids are a pure function of content
        assert c.chunk_id == chunk_id("session-label", (s.content_hash for s in c.sessions))
        assert len(c.sessions) <= settings.chunk_size
    letters = dead_letters(settings)
    assert len(letters) == 6
    by_reason = {d["reason"]: d for d in letters}
    assert by_reason["invalid_json"]["line"] == 161
    assert by_reason["invalid_json"]["raw"] == "{broken"
    assert by_reason["invalid_json"]["source"] == str(path)
    assert by_reason["invalid_utf8"]["raw"] == "\\xff\\xfe\\xfd"
    assert all(d["detail"] and d["stage"] == "ingest" for d in letters)
    counts = redis_client.hgetall(keyspace.dlq_reasons(settings))
    assert sum(int(v) for v in counts.values()) == 6


def test_dedupe_across_runs_and_forced_queue(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", list(generate(70, seed=2)))
    first = run_ingest(settings, [str(path)], client=redis_client, queue="student")
    second = run_ingest(settings, [str(path)], client=redis_client, queue="student")
    assert (first.enqueued, first.duplicates) == (70, 0)
    assert (second.enqueued, second.duplicates) == (0, 70)
    assert queue_depth(settings, redis_client, "teacher") == 0
    assert sum(len(c.sessions) for c in queued_chunks(settings, redis_client, "student")) == 70
    # Another task labels the same sessions separately.
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "other-task.toml").write_text((BUILTIN_DIR / "session-label.toml").read_text().replace(
        'name = "session-label"', 'name = "other-task"'))
    other = run_ingest(settings.model_copy(update={"specs_dir": specs}), [str(path)], client=redis_client,
                       task="other-task")
    assert other.enqueued == 70


def test_backpressure_holds_the_queue_below_high_water(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"chunk_size": 5, "queue_high_water_chunks": 4,
                                           "queue_low_water_chunks": 1})
    path = write_jsonl(tmp_path / "in.jsonl", list(generate(120, seed=3)))
    key = keyspace.queue(settings, "teacher")
    stop = threading.Event()
    drained: list[bytes] = []
    max_depth = [0]

    def slow_consumer() -> None:
        while not stop.is_set() or redis_client.llen(key):
            max_depth[0] = max(max_depth[0], redis_client.llen(key))
            item = redis_client.rpop(key)
            if item:
                drained.append(item)
            time.sleep(0.02)

    consumer = threading.Thread(target=slow_consumer)
    consumer.start()
    try:
        summary = run_ingest(settings, [str(path)], client=redis_client)
    finally:
        stop.set()
        consumer.join(timeout=30)
    assert summary.enqueued == 120
    assert summary.backpressure_paused_s > 0
    assert max_depth[0] <= settings.queue_high_water_chunks + 1
    assert len(drained) == summary.chunks == 24


def test_failed_enqueue_claims_nothing_so_nothing_is_lost(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"publish_batch_chunks": 1})
    path = write_jsonl(tmp_path / "in.jsonl", list(generate(200, seed=4)))
    real_enqueue = ChunkPublisher.enqueue
    calls = {"n": 0}

    def flaky(self: ChunkPublisher, *args: Any, **kwargs: Any) -> set[str]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ServiceUnavailable("broker went away")
        return real_enqueue(self, *args, **kwargs)

    monkeypatch.setattr(ChunkPublisher, "enqueue", flaky)
    with pytest.raises(ServiceUnavailable):
        run_ingest(settings, [str(path)], client=redis_client)
    assert claimed(settings, redis_client, "session-label") == settings.chunk_size  # the first chunk only
    monkeypatch.setattr(ChunkPublisher, "enqueue", real_enqueue)
    rerun = run_ingest(settings, [str(path)], client=redis_client)
    queued = queued_session_ids(settings, redis_client)
    assert len(queued) == len(set(queued)) == 200  # every session is queued once the operator re-runs
    assert rerun.enqueued == 200 - settings.chunk_size


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(
    st.one_of(
        st.binary(max_size=80),
        st.sampled_from(BAD_LINES),
        st.builds(lambda i, x: orjson.dumps({"session_id": f"s{i}", "x": x}),
                  st.integers(0, 20), st.text(max_size=10)),
    ),
    max_size=40,
))
def test_every_record_is_accounted_for(settings: Settings, redis_client: redis.Redis, tmp_path: Path,
                                       lines: list[bytes]) -> None:
    import uuid

    run = uuid.uuid4().hex[:8]  # one example, one prefix and one store
    settings = settings.model_copy(update={"redis_key_prefix": f"h{run}:", "chunk_size": 3,
                                           "store_url": f"file://{tmp_path / run}"})
    path = tmp_path / f"{run}.jsonl"
    path.write_bytes(b"\n".join(lines))
    summary = run_ingest(settings, [str(path)], client=redis_client)
    assert summary.read == summary.enqueued + summary.duplicates + sum(summary.rejected.values())
    assert len(dead_letters(settings)) == sum(summary.rejected.values())
    queued = sum(len(c.sessions) for c in queued_chunks(settings, redis_client, "teacher"))
    assert queued == summary.enqueued


def test_s3_prefix_source_with_gzip_and_arrays(
    settings: Settings, redis_client: redis.Redis, s3_endpoint: str, s3_bucket: str
) -> None:
    sessions = list(generate(30, seed=5))
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=s3_bucket, Key="in/day1/a.jsonl",
                  Body=b"".join(orjson.dumps(s) + b"\n" for s in sessions[:10]))
    s3.put_object(Bucket=s3_bucket, Key="in/day1/b.jsonl.gz",
                  Body=gzip.compress(b"".join(orjson.dumps(s) + b"\n" for s in sessions[10:20])))
    s3.put_object(Bucket=s3_bucket, Key="in/day2/c.json", Body=orjson.dumps(sessions[20:]))
    s3.put_object(Bucket=s3_bucket, Key="other/x.jsonl", Body=b'{"session_id": "nope"}\n')
    settings = settings.model_copy(update={"s3_endpoint_url": s3_endpoint})
    summary = run_ingest(settings, [f"s3://{s3_bucket}/in/"], client=redis_client)
    assert summary.read == 30 and summary.enqueued == 30


def test_stdin_and_array_files_via_celery_worker(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    """A real Celery worker consumes what the producer published, by task name."""
    from labelq.queue.app import TEACHER_TASK, create_app
    from labelq.queue.worker import worker_thread
    from labelq.schemas import ChunkMessage

    path = tmp_path / "arr.json"
    path.write_bytes(orjson.dumps(list(generate(40, seed=6))))
    app = create_app(settings)
    received: list[ChunkMessage] = []

    @app.task(name=TEACHER_TASK, bind=True, shared=False)  # shared: every later app would get it
    def label_chunk(self, message: dict) -> None:  # type: ignore[no-untyped-def, type-arg]
        assert self.request.delivery_info["routing_key"] == "teacher"
        received.append(ChunkMessage.decode(message))

    summary = run_ingest(settings, [str(path)], client=redis_client, app=app)
    with worker_thread(app, ["teacher"]):
        deadline = time.monotonic() + 30
        while sum(len(c.sessions) for c in received) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert summary.enqueued == 40
    assert sum(len(c.sessions) for c in received) == 40
    assert queue_depth(settings, redis_client, "teacher") == 0


@pytest.mark.parametrize("body", [b"\x1f\x8b", b"\x1f\x8bnot gzip at all\n",
                                  gzip.compress(b'{"session_id": "a"}\n{"session_id": "b"}\n')[:-12]])
def test_a_broken_gzip_source_is_dead_lettered_not_a_crash(settings: Settings, redis_client: redis.Redis,
                                                            tmp_path: Path, body: bytes) -> None:
    """Hypothesis found it: a .jsonl starting with gzip's magic bytes raised BadGzipFile out of ingest."""
    path = tmp_path / "looks-like.jsonl"
    path.write_bytes(body)
    summary = run_ingest(settings, [str(path)], client=redis_client)
    assert summary.rejected == {"invalid_gzip": 1}
    assert summary.read == summary.enqueued + summary.duplicates + 1
    letters = [d for d in dead_letters(settings) if d["reason"] == "invalid_gzip"]
    assert len(letters) == 1 and letters[0]["source"] == str(path)
