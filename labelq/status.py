"""What ``labelq status`` reports: queue depths, Redis memory, dead letters, per-task totals.

Its cost does not grow with history: the tasks come from the task registry (a
Redis set, ``labelq.task_registry``), never from a scan, and everything else is
read in one pipeline: 2 commands for the task list, then
``len(QUEUES) + 1 + len(CHUNK_STAGES)`` for the whole deployment and
:data:`COMMANDS_PER_TASK` per task, in two round trips. Only a budget whose Redis
totals are gone (flushed, or no teacher call yet this period) reads the store.
Redis memory (``INFO memory`` and the reserve) is one more round trip of 2 commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import redis

from labelq import keyspace
from labelq.agreement import QualityState
from labelq.budget import BUDGET_STATE_FIELDS, budget_state_from, period_id
from labelq.keyspace import BudgetField, Stat
from labelq.ledger import budget_limit_usd, cost_summary, ledger_from_hash
from labelq.queue.parking import PARKED_QUEUES
from labelq.queue.policy import CHUNK_STAGES, waiting_from_hash
from labelq.redis_memory import read_memory
from labelq.redis_server import int_hash_from
from labelq.routing import routing_from_hash
from labelq.settings import QUEUES, Settings
from labelq.snapshot import (
    AdapterStatus,
    RedisMemoryStatus,
    StatusSnapshot,
    StatusTotals,
    TaskStatus,
    TeacherStatus,
    Waiting,
)
from labelq.store import ObjectStore
from labelq.task_registry import known_tasks

__all__ = ["COMMANDS_PER_TASK", "gather"]

COMMANDS_PER_TASK = 7 + len(PARKED_QUEUES)  # what _read_task queues on the pipeline


def _budget_limit(settings: Settings, task: str) -> float | None:
    from labelq.errors import ConfigError
    from labelq.spec import load_spec

    try:
        return budget_limit_usd(settings, load_spec(task, settings.specs_dir))
    except ConfigError:
        return None  # a task with no spec here (ingested elsewhere): no budget to show


def _read_task(pipe: Any, settings: Settings, task: str, pid: str) -> None:
    """Queue a task's reads on ``pipe`` (:data:`COMMANDS_PER_TASK` commands; :func:`_task_status` reads them)."""
    pipe.hgetall(keyspace.stats(settings, task))
    pipe.hgetall(keyspace.dlq_task(settings, task))
    pipe.hgetall(keyspace.ledger(settings, task))
    pipe.hmget(keyspace.budget_keys(settings, task, pid)[0], BUDGET_STATE_FIELDS)
    pipe.hget(keyspace.budget_legacy(settings, task), BudgetField.SPENT)
    pipe.mget(keyspace.teacher_paused(settings, task), keyspace.adapter_current(settings, task),
              keyspace.adapter_pinned(settings, task), keyspace.agreement_state(settings, task))
    pipe.hgetall(keyspace.routing(settings, task))
    for queue in PARKED_QUEUES:
        pipe.llen(keyspace.parked(settings, queue, task))


def _task_status(settings: Settings, task: str, pid: str, replies: Iterator[Any],
                 store: ObjectStore | None) -> TaskStatus:
    stats, dlq = int_hash_from(next(replies)), int_hash_from(next(replies))
    ledger = ledger_from_hash(next(replies))
    budget = budget_state_from(settings, task, pid, next(replies), next(replies), store)
    paused, adapter_current, adapter_pinned, quality = next(replies)
    routing = routing_from_hash(settings, next(replies))
    parked = sum(int(next(replies)) for _ in PARKED_QUEUES)
    limit = _budget_limit(settings, task)
    engine_s = stats.get(Stat.STUDENT_ENGINE_MS, 0) / 1000
    return TaskStatus(
        ingested=stats.get(Stat.INGESTED, 0),
        duplicates=stats.get(Stat.DUPLICATES, 0),
        labelled_teacher=stats.get(Stat.LABELLED_TEACHER, 0),
        labelled_student=stats.get(Stat.LABELLED_STUDENT, 0),
        escalated_student=stats.get(Stat.ESCALATED_STUDENT, 0),
        student_engine_s=engine_s,
        dead_lettered=sum(dlq.values()),
        routing=routing,
        cost=cost_summary(teacher_usd=ledger.usd, teacher_labels=stats.get(Stat.LABELLED_TEACHER, 0),
                          student_engine_s=engine_s,
                          student_labels=stats.get(Stat.LABELLED_STUDENT, 0),
                          usd_per_gpu_hour=settings.student_gpu_usd_per_hour),
        dead_letter=dlq,
        adapter=AdapterStatus(
            current=int(adapter_current) if adapter_current else None,
            pinned=int(adapter_pinned) if adapter_pinned else None,
        ),
        teacher=TeacherStatus(
            cost_usd=round(ledger.usd, 6),
            cache_hits=ledger.cache_hits,
            models=ledger.models,
            budget_usd=limit,
            budget_spent_usd=round(budget.spent_usd, 6),
            budget_reserved_usd=round(budget.reserved_usd, 6),
            budget_remaining_usd=None if limit is None else round(
                max(0.0, limit - budget.spent_usd - budget.reserved_usd), 6),
            budget_period=budget.period,
            budget_period_id=budget.period_id,
            budget_resets_at=budget.resets_at,
            paused=orjson.loads(paused)["reason"] if paused else None,
        ),
        parked_chunks=parked,
        quality=None if (state := QualityState.from_json(quality)) is None else state.status(),
    )


def gather(settings: Settings, client: redis.Redis, store: ObjectStore | None = None, *,
           now: datetime | None = None) -> StatusSnapshot:
    """One snapshot (the CLI renders it as a table, or ``to_dict()`` as JSON). With ``store``, a
    budget whose Redis totals are gone (flushed) shows the durable spend the teacher will resume from."""
    names = known_tasks(settings, client)
    pid = period_id(settings.teacher_budget_period, now)
    with client.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            pipe.llen(keyspace.queue(settings, queue))
        pipe.hgetall(keyspace.dlq_reasons(settings))
        for stage in CHUNK_STAGES:
            pipe.hgetall(keyspace.stage_waiting(settings, stage))
        for task in names:
            _read_task(pipe, settings, task, pid)
        replies = iter(pipe.execute())
    queues = {queue: int(next(replies)) for queue in QUEUES}
    dead_letter = int_hash_from(next(replies))
    waiting: dict[str, Waiting] = {}
    for stage in CHUNK_STAGES:
        found = waiting_from_hash(next(replies))
        if found is not None:
            waiting[stage] = found
    tasks = {task: _task_status(settings, task, pid, replies, store) for task in names}
    memory = read_memory(client, keyspace.memory_reserve(settings))
    return StatusSnapshot(
        redis_memory=RedisMemoryStatus(
            used_bytes=memory.used_bytes, max_bytes=memory.max_bytes,
            share=None if memory.share is None else round(memory.share, 4),
            high_water=settings.redis_memory_high_water, reserve_bytes=memory.reserve_bytes),
        waiting=waiting,
        queues=queues,
        dead_letter=dead_letter,
        tasks=tasks,
        totals=StatusTotals(
            ingested=sum(t.ingested for t in tasks.values()),
            duplicates=sum(t.duplicates for t in tasks.values()),
            dead_lettered=sum(dead_letter.values()),
            queued_chunks=sum(queues.values()),
            parked_chunks=sum(t.parked_chunks for t in tasks.values()),
        ),
    )
