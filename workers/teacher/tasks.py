"""The teacher's Celery task: a thin shell around ``run_teacher_chunk``."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from labelq import keyspace
from labelq.agreement import offer_teacher
from labelq.budget import period_id
from labelq.ledger import budget_limit_usd
from labelq.logging import get_logger
from labelq.outcomes import ChunkOutcome, TeacherSpend
from labelq.queue.app import TEACHER_TASK, QueueApp
from labelq.queue.task import ChunkTask, Paused, register_chunk_task
from labelq.queue.worker import check_at_worker_start, on_worker_exit
from labelq.records import commit_chunk
from labelq.schemas import ChunkMessage
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.store import ObjectStore
from workers.teacher.breaker import Breaker
from workers.teacher.budget import Budget, process_writer
from workers.teacher.labeler import SessionResult, TeacherContext, label_chunk
from workers.teacher.limiter import RateLimiter
from workers.teacher.preflight import check_teacher
from workers.teacher.runtime import TeacherRuntime, close_all, runtime_for

log = get_logger(__name__)
DEADLINE_SHARE = 0.5  # finish (or hand back) well inside the visibility timeout


async def _label(settings: Settings, store: ObjectStore, runtime: TeacherRuntime, chunk: ChunkMessage,
                 deadline: float) -> list[SessionResult]:
    spec = load_spec(chunk.task, settings.specs_dir)
    limit_usd = budget_limit_usd(settings, spec)
    aredis = runtime.redis
    budget = Budget(aredis, settings, spec.name, limit_usd, process_writer(store, spec.name, limit_usd))
    try:
        ctx = TeacherContext(
            settings=settings, spec=spec, client=runtime.client, redis=aredis,
            limiter=RateLimiter(aredis, keyspace.rate_limit_keys(settings), rpm=settings.teacher_rpm,
                                tpm=settings.teacher_tpm,
                                window_ms=int(settings.teacher_rate_window_s * 1000)),
            budget=budget,
            breaker=None if runtime.client.is_replay else Breaker(settings, aredis),
        )
        return await label_chunk(ctx, chunk, deadline)
    finally:
        await budget.close()  # hand back the unused durable block: nothing of this chunk is in flight


def budget_spent_reason(settings: Settings, limit_usd: float) -> str:
    """``budget of $1.00 is spent``, and the period when the budget is per month or day."""
    period = settings.teacher_budget_period
    return f"budget of ${limit_usd:.2f} is spent" + (
        "" if period == "total" else f" for {period_id(period)} (UTC; it resets with the next {period})")


def _clear_pause(client: redis.Redis, pause_key: str, chunk_started_at: float) -> None:
    """Work flows again only if a chunk that *started after* the pause was declared finished.

    A chunk that paid its calls just before the budget ran out may finish after
    another worker declared the pause; that proves nothing, so the flag stays.
    """
    flag: bytes | None = client.get(pause_key)  # type: ignore[assignment]
    if flag is not None and orjson.loads(flag)["since"] < chunk_started_at:
        client.delete(pause_key)


def _pause_reason(settings: Settings, chunk: ChunkMessage, paused: SessionResult) -> tuple[str, str]:
    """Why the teacher stops, and what it waits on ("" for a spent budget: not an outage)."""
    if paused.status == "paused_auth":
        return ("the teacher API refused the key (401/403): check OPENAI_API_KEY or LABELQ_TEACHER_API_KEY",
                "configuration")
    if paused.status == "paused_config":
        return (f"the teacher's provider has no model {settings.teacher_model!r} (HTTP 404): "
                "set LABELQ_TEACHER_MODEL (and LABELQ_TEACHER_BASE_URL) to one it serves", "configuration")
    if paused.status == "paused_provider":
        return paused.detail, "provider"
    return budget_spent_reason(settings, budget_limit_usd(settings, load_spec(chunk.task, settings.specs_dir))), ""


def run_teacher_chunk(settings: Settings, store: ObjectStore, client: redis.Redis,
                      chunk: ChunkMessage, requeue: Any) -> ChunkOutcome:
    """Label a chunk, commit its output once, hand unfinished sessions back, or pause."""
    deadline = time.monotonic() + settings.visibility_timeout_s * DEADLINE_SHARE
    started_at = time.time()
    # Refused at worker start too; a worker started some other way waits on configuration (the error
    # policy) and loses nothing.
    check_teacher(settings)
    runtime = runtime_for(settings)  # this process's loop, teacher client and Redis pool, kept between chunks
    results = runtime.run(_label(settings, store, runtime, chunk, deadline))
    pause_key = keyspace.teacher_paused(settings, chunk.task)
    paused = next((r for r in results if r.status.startswith("paused_")), None)
    if paused is not None:
        why, on = _pause_reason(settings, chunk, paused)
        flag = orjson.dumps({"reason": why, "since": time.time()})
        client.set(pause_key, flag, ex=max(60, int(settings.teacher_pause_s * 4)))
        raise Paused(why, settings.teacher_pause_s, on=on)
    _clear_pause(client, pause_key, started_at)
    records = [r.record for r in results if r.record is not None]
    letters = [r.dead_letter for r in results if r.dead_letter is not None]
    unfinished = [r.item for r in results if r.status == "retry_later"]
    # What is handed back is part of the commit: written before it, so that a delivery after the
    # commit (a kill, a failed republish) hands back the committed run's sessions, not its own.
    handback_key = keyspace.teacher_handback(settings, chunk.chunk_id)
    if unfinished:
        client.set(handback_key, orjson.dumps([s.content_hash for s in unfinished]), ex=keyspace.CHUNK_DONE_TTL_S)
    first = commit_chunk(settings, store, client, stage="teacher", task=chunk.task, chunk_id=chunk.chunk_id,
                         records=records, dead_letters=letters,
                         inputs=[r.item for r in results if r.record is not None])
    if first and chunk.route == "sample" and records:  # the pairs of the live agreement (labelq.agreement)
        offer_teacher(settings, client, chunk.task, records)
    if not first:
        raw: bytes | None = client.get(handback_key)  # type: ignore[assignment]
        committed = set(orjson.loads(raw)) if raw else set()
        unfinished = [s for s in chunk.sessions if s.content_hash in committed]
    if unfinished:
        requeue(chunk, unfinished)  # the same chunk ids every time: a second copy commits nothing
    return ChunkOutcome(labelled=len(records), dead_lettered=len(letters), handed_back=len(unfinished),
                        teacher=TeacherSpend(model=records[0].model if records else None,
                                             usd=round(sum(r.cost_usd for r in records), 6),
                                             input_tokens=sum(r.input_tokens for r in records),
                                             output_tokens=sum(r.output_tokens for r in records)))


def _label_teacher_chunk(job: ChunkTask, chunk: ChunkMessage) -> ChunkOutcome:
    result = run_teacher_chunk(job.settings, job.store, job.redis, chunk,
                               requeue=lambda c, items: job.republish("teacher", c, items))
    job.trigger_curation_if_due(chunk.task)  # seed_size / retrain_every reached
    return result


def register(app: QueueApp) -> None:
    """Define the teacher task on ``app`` (the worker app, or a test's app); a teacher worker of it
    refuses to start without a chosen backend, a usable key and a priced model."""
    register_chunk_task(app, TEACHER_TASK, "teacher", _label_teacher_chunk)
    check_at_worker_start(app, "teacher", check_teacher)
    on_worker_exit(close_all)
