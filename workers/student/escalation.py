"""How many of a chunk's doubtful labels may go to the teacher: a bounded share, budget permitting.

The bound is global per task: escalations granted <= ``share`` x sessions the
students have seen, in one atomic step shared by every worker
(``labelq/lua/escalation_grant.lua``). The grant is
remembered per chunk, so a redelivered chunk makes the same decision and a
session is never both escalated and kept.
"""

from __future__ import annotations

import redis

from labelq import keyspace, lua
from labelq.budget import budget_state
from labelq.ledger import budget_limit_usd
from labelq.redis_server import read_int_hash
from labelq.settings import Settings
from labelq.spec import TaskSpec


def teacher_can_take(settings: Settings, client: redis.Redis, spec: TaskSpec) -> bool:
    """False while the teacher is paused (budget spent, key refused) or its budget is nearly gone."""
    if client.exists(keyspace.teacher_paused(settings, spec.name)):
        return False
    state = budget_state(client, settings, spec.name)  # this period's; after a flush the teacher decides
    return state.spent_usd + state.reserved_usd < 0.99 * budget_limit_usd(settings, spec)


def grant(settings: Settings, client: redis.Redis, task: str, chunk_id: str, *, sessions: int,
          candidates: int, share: float) -> int:
    """How many of ``candidates`` this chunk may escalate (the same answer on every delivery)."""
    keys = [keyspace.escalation_decision(settings, chunk_id), keyspace.escalation(settings, task)]
    args = [sessions, candidates, share, keyspace.ESCALATION_DECISION_TTL_S]
    return int(lua.script(client, "escalation_grant")(keys=keys, args=args))


def counts(settings: Settings, client: redis.Redis, task: str) -> dict[str, int]:
    return read_int_hash(client, keyspace.escalation(settings, task))
