"""The teacher worker's kept runtime (one event loop, teacher client and Redis pool per process,
reused chunk after chunk) and the Redis round trips an answered session costs."""

from __future__ import annotations

import asyncio
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.client import Pipeline

from labelq.schemas import ChunkMessage
from labelq.settings import Settings
from labelq.store import open_store
from tests.support.openai_server import FakeOpenAI
from tests.support.redis_process import RedisProcess
from tests.support.teacher import REPLAY_UNLIMITED, chunks_of, teacher_settings
from workers.teacher import breaker as breaker_module
from workers.teacher.breaker import Breaker
from workers.teacher.runtime import close_all, runtime_for
from workers.teacher.tasks import run_teacher_chunk

pytestmark = pytest.mark.integration


def never_requeue(chunk: ChunkMessage, items: object) -> None:
    raise AssertionError("nothing is handed back here")


def test_chunks_share_one_loop_client_and_redis_pool(settings: Settings, redis_client: redis.Redis) -> None:
    with FakeOpenAI() as fake:
        s = teacher_settings(settings, fake.base_url, teacher_concurrency=1)
        first, *rest = chunks_of(12, 4, seed=31)
        run_teacher_chunk(s, open_store(s), redis_client, first, requeue=never_requeue)
        kept = runtime_for(s)
        connections = redis_client.info("stats")["total_connections_received"]
        for chunk in rest:
            assert run_teacher_chunk(s, open_store(s), redis_client, chunk, requeue=never_requeue).labelled == 4
        assert runtime_for(s) is kept and not kept.loop.is_closed()
        assert redis_client.info("stats")["total_connections_received"] == connections  # no new connection
        assert len(fake.requests) == 12 and len({r["peer"] for r in fake.requests}) == 1  # one HTTP connection
    close_all()  # what a worker process does as it exits
    assert kept.loop.is_closed() and not kept.usable


def test_other_settings_make_a_new_runtime_and_close_the_old_one(settings: Settings) -> None:
    first = runtime_for(settings)
    other = settings.model_copy(update={"teacher_rpm": 7})
    second = runtime_for(other)
    assert second is not first and first.loop.is_closed() and not second.loop.is_closed()
    assert runtime_for(settings.model_copy(update={"teacher_rpm": 7})) is second  # equal settings: kept
    close_all()
    assert second.loop.is_closed()


def test_a_forked_process_makes_its_own_runtime_and_leaves_the_parents_alone(settings: Settings) -> None:
    parent = runtime_for(settings)
    assert parent.run(parent.redis.ping())  # the parent holds a Redis connection when it forks
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking a multi-threaded process (3.12+)
        pid = os.fork()
    if pid == 0:  # the child, as Celery's prefork pool makes one
        try:
            child = runtime_for(settings)
            ok = child is not parent and child.redis is not parent.redis and child.run(child.redis.ping())
            os.write(write, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 2)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert runtime_for(settings) is parent and parent.run(parent.redis.ping())  # untouched by the child
    close_all()


def test_the_kept_redis_pool_reconnects_after_redis_restarts(settings: Settings, tmp_path: Path,
                                                             own_redis: RedisProcess) -> None:
    server = own_redis
    s = settings.model_copy(update={"redis_url": SecretStr(server.url), **REPLAY_UNLIMITED})
    client = redis.Redis.from_url(server.url)
    first, second = chunks_of(8, 4, seed=41)
    assert run_teacher_chunk(s, open_store(s), client, first, requeue=never_requeue).labelled == 4
    server.stop()
    server.start()
    assert run_teacher_chunk(s, open_store(s), client, second, requeue=never_requeue).labelled == 4
    close_all()


def test_an_answered_session_costs_two_redis_round_trips(settings: Settings, redis_client: redis.Redis,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted where the teacher's async Redis client sends: a command, or a whole pipeline."""
    sent: list[str] = []
    command, pipeline = aioredis.Redis.execute_command, Pipeline.execute

    async def one_command(self: aioredis.Redis, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await command(self, *args, **options)

    async def one_pipeline(self: Pipeline, raise_on_error: bool = True) -> list[Any]:
        sent.append("pipeline")
        return await pipeline(self, raise_on_error)

    monkeypatch.setattr(aioredis.Redis, "execute_command", one_command)  # a pipeline queues, not this
    monkeypatch.setattr(Pipeline, "execute", one_pipeline)
    # Exact counts: no pacing wait (GCRA spaces requests window/rpm apart), and a breaker read at the
    # chunk's start still counts however slow this machine is.
    monkeypatch.setattr(breaker_module, "SEEN_CLOSED_S", 3600.0)
    with FakeOpenAI() as fake:
        s = teacher_settings(settings, fake.base_url, teacher_concurrency=8, teacher_rpm=10**9)
        warm, chunk = chunks_of(32, 16, seed=51)
        run_teacher_chunk(s, open_store(s), redis_client, warm, requeue=never_requeue)  # the period seeded
        sent.clear()
        assert run_teacher_chunk(s, open_store(s), redis_client, chunk, requeue=never_requeue).labelled == 16
    close_all()
    # Two per session (the reservation with its permit; the bookkeeping of the answer), two for the
    # chunk (its cache look-ups, the breaker), two for the first call, which takes a new durable block
    # (the last chunk handed its block back): the check that Redis still holds it, and the permit.
    assert len(sent) == 2 * 16 + 2 + 2, sent


def test_a_breaker_seen_closed_is_not_asked_again_for_a_moment(settings: Settings, redis_url: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker_module, "SEEN_CLOSED_S", 0.2)
    s = settings.model_copy(update={"teacher_breaker_threshold": 2})

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        mine, another_worker = Breaker(s, client), Breaker(s, client)
        await mine.refresh()  # closed
        for _ in range(2):
            await another_worker.failed("teacher_http_503", None)  # opens it
        assert await mine.check() is None  # seen closed a moment ago: not asked
        await asyncio.sleep(0.2)
        blocked = await mine.check()  # asked
        assert blocked is not None and blocked.reason == "teacher_http_503"
        await client.aclose()

    asyncio.run(scenario())
