"""What ``labelq status`` reports: queue depths, Redis memory, dead letters, per-task totals."""

from __future__ import annotations

import orjson
import redis

from labelq import keyspace
from labelq.budget import budget_state
from labelq.keyspace import Stat
from labelq.ledger import budget_limit_usd, cost_summary, read_ledger
from labelq.queue.inspect import queue_depths
from labelq.queue.policy import CHUNK_STAGES, read_waiting
from labelq.redis_memory import read_memory
from labelq.redis_server import read_int_hash
from labelq.routing import routing_state
from labelq.settings import Settings
from labelq.snapshot import (
    AdapterStatus,
    RedisMemoryStatus,
    StatusSnapshot,
    StatusTotals,
    TaskStatus,
    TeacherStatus,
)
from labelq.store import ObjectStore


def known_tasks(settings: Settings, client: redis.Redis) -> list[str]:
    prefix = keyspace.stats_prefix(settings)
    names = {k.decode()[len(prefix):] for k in client.scan_iter(match=prefix + "*", count=500)}
    return sorted(names)


def _budget_limit(settings: Settings, task: str) -> float | None:
    from labelq.errors import ConfigError
    from labelq.spec import load_spec

    try:
        return budget_limit_usd(settings, load_spec(task, settings.specs_dir))
    except ConfigError:
        return None  # a task with no spec here (ingested elsewhere): no budget to show


def gather(settings: Settings, client: redis.Redis, store: ObjectStore | None = None) -> StatusSnapshot:
    """One snapshot (the CLI renders it as a table, or ``to_dict()`` as JSON). With ``store``, a
    budget whose Redis totals are gone (flushed) shows the durable spend the teacher will resume from."""
    queues = queue_depths(settings, client)
    dead_letter = read_int_hash(client, keyspace.dlq_reasons(settings))
    tasks: dict[str, TaskStatus] = {}
    for task in known_tasks(settings, client):
        stats = read_int_hash(client, keyspace.stats(settings, task))
        dlq = read_int_hash(client, keyspace.dlq_task(settings, task))
        ledger = read_ledger(client, settings, task)
        budget = budget_state(client, settings, task, store)
        limit = _budget_limit(settings, task)
        paused: bytes | None = client.get(keyspace.teacher_paused(settings, task))  # type: ignore[assignment]
        adapter_current, adapter_pinned = client.mget(keyspace.adapter_current(settings, task),
                                                      keyspace.adapter_pinned(settings, task))
        engine_s = stats.get(Stat.STUDENT_ENGINE_MS, 0) / 1000
        tasks[task] = TaskStatus(
            ingested=stats.get(Stat.INGESTED, 0),
            duplicates=stats.get(Stat.DUPLICATES, 0),
            labelled_teacher=stats.get(Stat.LABELLED_TEACHER, 0),
            labelled_student=stats.get(Stat.LABELLED_STUDENT, 0),
            escalated_student=stats.get(Stat.ESCALATED_STUDENT, 0),
            student_engine_s=engine_s,
            dead_lettered=sum(dlq.values()),
            routing=routing_state(settings, client, task),
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
        )
    memory = read_memory(client, keyspace.memory_reserve(settings))
    return StatusSnapshot(
        redis_memory=RedisMemoryStatus(
            used_bytes=memory.used_bytes, max_bytes=memory.max_bytes,
            share=None if memory.share is None else round(memory.share, 4),
            high_water=settings.redis_memory_high_water, reserve_bytes=memory.reserve_bytes),
        waiting=read_waiting(settings, client, CHUNK_STAGES),
        queues=queues,
        dead_letter=dead_letter,
        tasks=tasks,
        totals=StatusTotals(
            ingested=sum(t.ingested for t in tasks.values()),
            duplicates=sum(t.duplicates for t in tasks.values()),
            dead_lettered=sum(dead_letter.values()),
            queued_chunks=sum(queues.values()),
        ),
    )
