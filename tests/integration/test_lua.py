"""The Lua scripts on a real redis-server: each compiles, a call sends its SHA, not its text, a chain
of two runs atomically, and a batch survives a server that forgot a script."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from labelq import keyspace, lua
from labelq.records import commit_chunk
from labelq.settings import Settings
from labelq.store import open_store
from workers.student import escalation

pytestmark = pytest.mark.integration


def _calls(client: redis.Redis, command: str) -> int:
    stats: dict[str, dict[str, int]] = client.info("commandstats")  # type: ignore[assignment]
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_every_script_compiles(redis_client: redis.Redis) -> None:
    for name in lua.NAMES:
        assert redis_client.script_load(lua.source(name)) == lua.script(redis_client, name).sha


def test_calls_send_the_sha_after_the_first(settings: Settings, redis_client: redis.Redis) -> None:
    store = open_store(settings)
    commit_chunk(settings, store, redis_client, stage="teacher", task="t", chunk_id="c0", records=[],
                 dead_letters=[])
    evals, evalshas = _calls(redis_client, "eval"), _calls(redis_client, "evalsha")
    for i in range(1, 4):
        commit_chunk(settings, store, redis_client, stage="teacher", task="t", chunk_id=f"c{i}", records=[],
                     dead_letters=[], extra_counts={keyspace.Stat.INGESTED: 1})
        assert escalation.grant(settings, redis_client, "t", f"c{i}", sessions=10, candidates=5, share=0.2) == 2
    assert _calls(redis_client, "eval") == evals and _calls(redis_client, "evalsha") >= evalshas + 6
    assert escalation.counts(settings, redis_client, "t") == {keyspace.EscalationField.SEEN: 30,
                                                                keyspace.EscalationField.GRANTED: 6}


def test_a_chain_runs_its_second_script_only_when_the_first_answered_one(settings: Settings, redis_url: str) -> None:
    budget, rate = keyspace.budget_keys(settings, "t", "total"), keyspace.rate_limit_keys(settings)

    def reserve(rid: str) -> lua.Call:  # $0.60 of a $1.00 cap, for a minute, keys that never expire
        return lua.Call("budget_reserve", budget, [rid, 600_000, 1_000_000, 60_000, 0])

    def permit(pid: str) -> lua.Call:
        return lua.Call("rate_acquire", rate, [60_000, 100, 10**6, 10, pid, 4])

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        await lua.script(client, "budget_seed")(keys=budget[:1], args=[0, 0])
        chained = lua.chain(client, "budget_reserve", "rate_acquire")
        granted = await chained(reserve("r1"), permit("p1"))
        assert granted[0] == 1 and granted[1][0] == 1  # reserved, and the permit granted
        assert await chained(reserve("r2"), permit("p2")) == [0]  # past the cap: no permit asked
        assert await client.zrange(rate[0], 0, -1) == [b"p1"]
        await client.aclose()

    asyncio.run(scenario())


def test_a_batch_runs_a_script_the_server_has_forgotten(settings: Settings, redis_url: str) -> None:
    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        key = keyspace.rate_limit_keys(settings)[2]
        lua.script(client, "rate_settle")  # known to this client: sent by its SHA alone
        await client.script_flush()  # what a restarted Redis knows
        batch = lua.Batch(client)
        batch.pipe.set(key, 5)
        at = batch.script("rate_settle", keyspace.rate_limit_keys(settings), ["gone", 3, 1])
        batch.pipe.get(key)
        replies = await batch.execute()
        assert replies[0] is True and replies[at] == 0 and replies[2] == b"5"  # 0: no such permit
        assert await client.script_exists(lua.script(client, "rate_settle").sha) == [True]  # loaded again
        await client.aclose()

    asyncio.run(scenario())
