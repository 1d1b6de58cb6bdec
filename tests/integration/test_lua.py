"""The Lua scripts on a real redis-server: each compiles, and a call sends its SHA, not its text."""

from __future__ import annotations

import pytest
import redis

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
