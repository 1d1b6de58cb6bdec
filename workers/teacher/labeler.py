"""Label one chunk with the teacher: concurrent requests, every session accounted for.

Per session: cache -> budget reservation -> rate-limit permit -> call ->
settle -> output contract (one repair request) -> record. Transient failures
back off (exponential, jitter, Retry-After honoured) within the chunk's
deadline; a session that runs out of attempts is dead-lettered with its
reason; one that runs out of time is handed back to be retried in a new chunk.
One failing session never sinks the rest of its chunk.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Literal

import orjson
import redis.asyncio as aioredis

from labelq import keyspace
from labelq.contract import check, repair_instruction
from labelq.errors import RateLimited
from labelq.ledger import call_increments, price_usd
from labelq.logging import get_logger
from labelq.render import render_for_task
from labelq.schemas import ChunkMessage, DeadLetter, LabelRecord, SessionItem
from labelq.settings import Settings
from labelq.spec import TaskSpec
from workers.teacher.budget import Budget
from workers.teacher.client import Completion, TeacherCallError, TeacherClient
from workers.teacher.limiter import RateLimiter
from workers.teacher.prompt import build_messages, estimate_prompt_tokens, repair_messages

log = get_logger(__name__)

Status = Literal["labelled", "dead", "retry_later", "paused_budget", "paused_auth"]


@dataclass
class SessionResult:
    item: SessionItem
    status: Status
    record: LabelRecord | None = None
    dead_letter: DeadLetter | None = None


@dataclass
class TeacherContext:
    settings: Settings
    spec: TaskSpec
    client: TeacherClient
    redis: aioredis.Redis
    limiter: RateLimiter
    budget: Budget
    rng: random.Random = field(default_factory=random.Random)


@dataclass
class _Spend:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


def backoff_s(settings: Settings, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Exponential with full jitter; never sooner than the provider's Retry-After."""
    cap = min(settings.teacher_backoff_max_s, settings.teacher_backoff_base_s * 2 ** (attempt - 1))
    delay = cap * (0.5 + rng.random() / 2)
    return float(max(delay, retry_after_s or 0.0))


async def _call(ctx: TeacherContext, item: SessionItem, messages: list[dict[str, str]],
                spend: _Spend, deadline: float) -> Completion | Literal["budget"]:
    """One paid call under the budget and the rate limit; settles both with the real usage."""
    max_out = ctx.spec.teacher.max_output_tokens
    est_in = estimate_prompt_tokens(messages)
    model = ctx.client.model
    reservation = await ctx.budget.reserve(price_usd(ctx.settings, model, est_in, max_out))
    if reservation is None:
        return "budget"
    permit = None
    cost = 0.0
    try:
        permit = await ctx.limiter.acquire(est_in + max_out, deadline=deadline)
        log.debug("teacher_request", session_id=item.session_id, permit_ms=permit.granted_at_ms)
        completion = await ctx.client.complete(messages, max_tokens=max_out,
                                               temperature=ctx.spec.teacher.temperature, session=item)
        cost = price_usd(ctx.settings, model, completion.input_tokens, completion.output_tokens)
        spend.input_tokens += completion.input_tokens
        spend.output_tokens += completion.output_tokens
        spend.cost_usd += cost
        pipe = ctx.redis.pipeline(transaction=False)
        for key, name, n in call_increments(ctx.settings, task=ctx.spec.name, model=model,
                                            input_tokens=completion.input_tokens,
                                            output_tokens=completion.output_tokens, cost_usd=cost):
            pipe.hincrby(key, name, n)
        await pipe.execute()
        await ctx.limiter.settle(permit, completion.input_tokens + completion.output_tokens)
        return completion
    except TeacherCallError:
        if permit is not None:  # a failed request still counts as a request; its tokens do not
            await ctx.limiter.settle(permit, 0)
        raise
    finally:
        await ctx.budget.settle(reservation, cost)


def _dead(item: SessionItem, chunk: ChunkMessage, reason: str, detail: str, raw: str | None = None) -> SessionResult:
    return SessionResult(item, "dead", dead_letter=DeadLetter(
        reason=reason, detail=detail, stage="teacher", task=chunk.task, session_id=item.session_id,
        content_hash=item.content_hash, chunk_id=chunk.chunk_id, raw=raw))


async def label_session(ctx: TeacherContext, item: SessionItem, chunk: ChunkMessage,
                        deadline: float) -> SessionResult:
    spec, settings = ctx.spec, ctx.settings
    model = ctx.client.model
    cache_key = keyspace.teacher_cache(settings, model, spec.prompt_version, item.content_hash)
    started = time.monotonic()
    flags = [f"route:{chunk.route}"] + (["replay"] if ctx.client.is_replay else [])

    def record(label: str, words: int, spend: _Spend, extra: list[str]) -> SessionResult:
        return SessionResult(item, "labelled", record=LabelRecord(
            session_id=item.session_id, content_hash=item.content_hash, task=spec.name, label=label,
            source="teacher", model=model, prompt_version=spec.prompt_version, words=words,
            input_tokens=spend.input_tokens, output_tokens=spend.output_tokens,
            cost_usd=round(spend.cost_usd, 8), latency_ms=round((time.monotonic() - started) * 1000, 1),
            chunk_id=chunk.chunk_id, flags=flags + extra))

    cached = await ctx.redis.get(cache_key)
    if cached is not None:
        hit = orjson.loads(cached)
        await ctx.redis.hincrby(keyspace.ledger(settings, spec.name), keyspace.LEDGER_CACHE_HITS, 1)
        return record(hit["label"], hit["words"], _Spend(), ["cache_hit"])

    rendered = render_for_task(spec, settings, item.payload)
    messages = build_messages(spec, rendered)
    attempts_key = keyspace.teacher_attempts(settings, spec.name, item.content_hash)
    spend = _Spend()
    repaired = False
    while True:
        try:
            result = await _call(ctx, item, messages, spend, deadline)
        except TeacherCallError as exc:
            if exc.operational:
                return SessionResult(item, "paused_auth")
            if not exc.retryable:
                return _dead(item, chunk, exc.reason, str(exc))
            attempt = int(await ctx.redis.incr(attempts_key))
            await ctx.redis.expire(attempts_key, keyspace.TEACHER_ATTEMPTS_TTL_S)
            if attempt >= settings.teacher_max_attempts:
                await ctx.redis.delete(attempts_key)
                return _dead(item, chunk, exc.reason, f"gave up after {attempt} attempts: {exc}")
            delay = backoff_s(settings, attempt, exc.retry_after_s, ctx.rng)
            if time.monotonic() + delay > deadline:
                return SessionResult(item, "retry_later")
            log.info("teacher_retry", session_id=item.session_id, reason=exc.reason, attempt=attempt,
                     delay_s=round(delay, 2))
            await asyncio.sleep(delay)
            continue
        if result == "budget":
            return SessionResult(item, "paused_budget")
        verdict = check(result.text, spec.contract)
        if verdict.ok:
            await ctx.redis.delete(attempts_key)
            await ctx.redis.set(cache_key, orjson.dumps({"label": verdict.label, "words": verdict.words}),
                                ex=settings.teacher_cache_ttl_s)
            return record(verdict.label, verdict.words, spend, ["repaired"] if repaired else [])
        if repaired:
            return _dead(item, chunk, "contract_violation",
                         f"answer broke the contract ({verdict.reason}) after one repair", raw=result.text)
        repaired = True
        messages = repair_messages(messages, result.text, repair_instruction(verdict, spec.contract))


async def label_chunk(ctx: TeacherContext, chunk: ChunkMessage, deadline: float) -> list[SessionResult]:
    """Every session of ``chunk``, concurrently (at most ``teacher_concurrency`` in flight)."""
    gate = asyncio.Semaphore(ctx.settings.teacher_concurrency)

    async def one(item: SessionItem) -> SessionResult:
        async with gate:
            try:
                return await label_session(ctx, item, chunk, deadline)
            except RateLimited:
                return SessionResult(item, "retry_later")

    async with asyncio.TaskGroup() as group:  # a Redis failure cancels the rest: the chunk is redelivered
        tasks = [group.create_task(one(item)) for item in chunk.sessions]
    return [t.result() for t in tasks]
