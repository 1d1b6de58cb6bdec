"""``labelq status``, ``labelq audit`` and the task registry cost the same Redis commands whatever the
history: counted by a private redis-server (INFO commandstats), nothing else on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.audit import audit
from labelq.queue.inspect import PAGE_MESSAGES, in_flight_counts
from labelq.settings import Settings
from labelq.status import COMMANDS_PER_TASK, gather
from labelq.store import open_store
from labelq.task_registry import known_tasks
from tests.support.ops_history import TASKS, add_work, chunk_envelope, fill_history, redis_commands
from tests.support.redis_process import RedisProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def private(tmp_path: Path) -> Iterator[tuple[Settings, redis.Redis]]:
    """A redis-server of this test's own (its command counts are this test's alone)."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    settings = Settings(state_dir=tmp_path / "state", redis_url=server.url,  # type: ignore[arg-type]
                        redis_key_prefix="labelq:", store_url=f"file://{tmp_path / 'store'}")
    try:
        yield settings, redis.Redis.from_url(server.url)
    finally:
        server.stop()


def test_status_and_audit_send_the_same_commands_at_2k_and_20k_keys_of_history(
        private: tuple[Settings, redis.Redis]) -> None:
    settings, client = private
    store = open_store(settings)
    flying = add_work(settings, client)
    costs = []
    for start, keys in ((0, 2_000), (2_000, 20_000)):
        fill_history(settings, client, keys, start=start)
        assert client.dbsize() > keys
        known_tasks(settings, client)  # the registry's one-time fill (a no-op once done)
        audit(settings, client)  # loads the audit's script once per Redis (a NOSCRIPT, then its text)
        status_commands = redis_commands(client, lambda: gather(settings, client, store))
        audit_commands = redis_commands(client, lambda: audit(settings, client))
        costs.append((status_commands, audit_commands))
    assert costs[0] == costs[1], costs
    status_commands, audit_commands = costs[0]
    assert status_commands <= 50 and audit_commands <= 50, costs
    # 2 for the task list, 3 queue depths, the dead-letter reasons, 2 waiting stages, per task, then
    # Redis memory (INFO memory and the reserve's STRLEN).
    assert status_commands == 2 + 3 + 1 + 2 + COMMANDS_PER_TASK * len(TASKS) + 2

    snapshot, report = gather(settings, client, store), audit(settings, client)
    assert set(snapshot.tasks) == set(TASKS) == set(report.tasks)
    assert snapshot.queues["teacher"] == len(TASKS) and snapshot.queues["student"] == 0
    assert snapshot.totals.parked_chunks == len(TASKS)
    assert all(t.parked_chunks == 1 for t in snapshot.tasks.values())
    # Every session is found in flight: queued, parked, unacknowledged or in the redrive outbox.
    assert report.ok, report
    assert {task: b.in_flight for task, b in report.tasks.items()} == flying


def test_the_registry_takes_in_a_redis_from_before_it_with_one_scan(
        private: tuple[Settings, redis.Redis]) -> None:
    settings, client = private
    fill_history(settings, client, 5_000, tasks=("older-a", "older-b"))  # by a labelq without the registry
    assert not client.exists(keyspace.task_registry(settings))
    first = redis_commands(client, lambda: known_tasks(settings, client))
    assert known_tasks(settings, client) == ["older-a", "older-b"]
    assert client.smembers(keyspace.task_registry(settings)) == {b"older-a", b"older-b"}
    assert first > 2 and redis_commands(client, lambda: known_tasks(settings, client)) == 2
    # From then on the registry is the list: counters written behind its back are not scanned for ...
    client.hset(keyspace.stats(settings, "behind-its-back"), "ingested", 1)
    assert known_tasks(settings, client) == ["older-a", "older-b"]
    # ... until the marker is deleted (the documented way to rescan).
    client.delete(keyspace.task_registry_complete(settings))
    assert known_tasks(settings, client) == ["behind-its-back", "older-a", "older-b"]


def test_audit_reads_a_long_queue_in_pages_and_counts_each_message_once(
        private: tuple[Settings, redis.Redis]) -> None:
    settings, client = private
    queue = keyspace.queue(settings, "student")
    n = 2 * PAGE_MESSAGES + 50
    for i in range(n):
        client.lpush(queue, chunk_envelope(settings, "student", "session-label", 1 + i % 3, seed=f"m{i}"))
    sessions = sum(1 + i % 3 for i in range(n))
    # A message without the session-count header (another publisher) is counted from its body.
    bare = orjson.loads(chunk_envelope(settings, "student", "session-label", 5, seed="bare"))
    del bare["headers"]["argsrepr"]
    client.lpush(queue, orjson.dumps(bare))
    # The same message read twice (a push shifted a page under the reader) counts once.
    client.rpush(queue, client.lindex(queue, 0))  # type: ignore[arg-type]
    commands = redis_commands(client, lambda: in_flight_counts(settings, client, ["session-label"]))
    assert in_flight_counts(settings, client, ["session-label"]) == {"session-label": sessions + 5}
    # The first pages of 5 keys in one pipeline, then 2 more pages of the long list.
    assert commands == 5 + (n + 2) // PAGE_MESSAGES


def test_the_session_count_header_says_what_the_body_holds(settings: Settings) -> None:
    """The audit counts a message's sessions from its header: it must agree with the body (a change to
    the message that breaks this makes the audit decode bodies again, never miscount)."""
    from labelq.queue.inspect import chunk_message_count, decode_chunk_message

    for sessions in (1, 7):
        raw = chunk_envelope(settings, "teacher", "session-label", sessions, seed=f"h{sessions}")
        chunk = decode_chunk_message(raw)
        counted = chunk_message_count(raw)
        assert chunk is not None and counted is not None
        assert (counted.task, counted.sessions) == (chunk["task"], len(chunk["sessions"])) == ("session-label", sessions)
        assert counted.message_id == orjson.loads(raw)["headers"]["id"]
