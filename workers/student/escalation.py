"""How many of a chunk's doubtful labels may go to the teacher: a bounded share, budget permitting.

The bound is global per task: escalations granted <= ``share`` x sessions the
students have seen, in one atomic step shared by every worker. The grant is
remembered per chunk, so a redelivered chunk makes the same decision and a
session is never both escalated and kept.
"""

from __future__ import annotations

import redis

from labelq.ledger import budget_limit_usd, budget_state
from labelq.settings import Settings
from labelq.spec import TaskSpec

_GRANT_LUA = """
local decided = redis.call('GET', KEYS[1])
if decided then return tonumber(decided) end
local seen = redis.call('HINCRBY', KEYS[2], 'seen', ARGV[1])
local granted = tonumber(redis.call('HGET', KEYS[2], 'granted') or '0')
local allow = math.floor(seen * tonumber(ARGV[3]) + 1e-9) - granted
if allow < 0 then allow = 0 end
if allow > tonumber(ARGV[2]) then allow = tonumber(ARGV[2]) end
redis.call('HINCRBY', KEYS[2], 'granted', allow)
redis.call('SET', KEYS[1], allow, 'EX', ARGV[4])
return allow
"""
DECISION_TTL_S = 30 * 86_400


def teacher_can_take(settings: Settings, client: redis.Redis, spec: TaskSpec) -> bool:
    """False while the teacher is paused (budget spent, key refused) or its budget is nearly gone."""
    if client.exists(settings.redis_key("paused", "teacher", spec.name)):
        return False
    spent, reserved = budget_state(client, settings, spec.name)
    return spent + reserved < 0.99 * budget_limit_usd(settings, spec)


def grant(settings: Settings, client: redis.Redis, task: str, chunk_id: str, *, sessions: int,
          candidates: int, share: float) -> int:
    """How many of ``candidates`` this chunk may escalate (the same answer on every delivery)."""
    keys = [settings.redis_key("escalation", "chunk", chunk_id), settings.redis_key("escalation", task)]
    return int(client.eval(_GRANT_LUA, 2, *keys, sessions, candidates, share, DECISION_TTL_S))


def counts(settings: Settings, client: redis.Redis, task: str) -> dict[str, int]:
    raw: dict[bytes, bytes] = client.hgetall(settings.redis_key("escalation", task))  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}
