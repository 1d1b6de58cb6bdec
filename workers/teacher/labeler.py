"""Label one chunk with the teacher: concurrent requests, every session accounted for.

Per session: cache -> budget reservation -> rate-limit permit -> call ->
output contract (one repair request) -> settle -> record. Transient failures
back off (exponential, jitter, Retry-After honoured) within the chunk's
deadline; a session that runs out of attempts is dead-lettered with its
reason; one that runs out of time is handed back to be retried in a new chunk.
One failing session never sinks the rest of its chunk.

What an answer or a failure means is decided by the session state machine
(``session.py``), cache and ledger by ``books.py``; both are shared with the
Batch API mode (``batch.py``). This module sends requests one by one.

Redis round trips: the chunk's cache look-ups and a read of the circuit breaker
at its start (two at once; one more with cache hits); per answered request two: the budget
reservation with the rate-limit permit (one chained script, ``lua.chain``; while
the writer's durable block has room, ``budget.py``), and one batch that settles
both at the real usage, adds the ledger, caches the label and counts the answer
in the breaker (reading it, so that the next request need not ask). A request
that takes a new durable block adds two (the check, the permit). The budget and
rate limit are exactly those of their scripts; only the order of the bookkeeping
after an answer is free.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis

from labelq import keyspace, lua
from labelq.contract import spec_response_format
from labelq.errors import RateLimited
from labelq.ledger import price_usd
from labelq.logging import get_logger
from labelq.schemas import ChunkMessage, DeadLetter, LabelRecord, SessionItem
from labelq.settings import Settings
from labelq.spec import TaskSpec
from workers.teacher.books import TeacherBooks
from workers.teacher.breaker import Breaker, BreakerOpen
from workers.teacher.budget import Budget, Reservation
from workers.teacher.client import Completion, TeacherCallError, TeacherClient
from workers.teacher.limiter import Permit, RateLimiter
from workers.teacher.prompt import Messages, estimate_prompt_tokens
from workers.teacher.reasoning import output_token_cap
from workers.teacher.session import Dead, Halted, Retry, SessionLabelling

log = get_logger(__name__)

Status = Literal["labelled", "dead", "retry_later", "paused_budget", "paused_auth", "paused_config",
                 "paused_provider"]


@dataclass
class SessionResult:
    item: SessionItem
    status: Status
    record: LabelRecord | None = None
    dead_letter: DeadLetter | None = None
    detail: str = ""  # why a paused session waits (the circuit breaker's state)


@dataclass
class TeacherContext:
    settings: Settings
    spec: TaskSpec
    client: TeacherClient
    redis: aioredis.Redis
    limiter: RateLimiter
    budget: Budget
    breaker: Breaker | None = None  # None for the replay teacher (no provider)
    rng: random.Random = field(default_factory=random.Random)
    books: TeacherBooks = field(init=False)
    response_format: dict[str, Any] | None = field(init=False)  # the spec's JSON schema, if any: sent as is

    def __post_init__(self) -> None:
        self.books = TeacherBooks(self.settings, self.spec, self.redis, self.client.model)
        self.response_format = spec_response_format(self.spec)


def backoff_s(settings: Settings, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Exponential with full jitter; never sooner than the provider's Retry-After."""
    cap = min(settings.teacher_backoff_max_s, settings.teacher_backoff_base_s * 2 ** (attempt - 1))
    delay = cap * (0.5 + rng.random() / 2)
    return float(max(delay, retry_after_s or 0.0))


@dataclass(frozen=True, slots=True)
class Paid:
    """An answer the provider sent, its money still reserved and its permit still at the worst case."""

    completion: Completion
    reservation: Reservation
    permit: Permit


async def _call(ctx: TeacherContext, item: SessionItem, messages: Messages, deadline: float) -> Paid | None:
    """One request under the budget and the rate limit; None when the budget would not cover it
    (then nothing was sent). The caller settles the answer (``_book``); a failed request is settled here."""
    max_out = output_token_cap(ctx.settings, ctx.spec, ctx.client.model)  # a reasoning model's thinking too
    est_in = estimate_prompt_tokens(messages)
    ask = ctx.limiter.ask(est_in + max_out)  # sent with the reservation when it can be: one round trip
    reservation, reply = await ctx.budget.reserve_and(price_usd(ctx.settings, ctx.client.model, est_in, max_out),
                                                      ask)
    if reservation is None:
        return None
    permit = None
    try:
        permit = await ctx.limiter.acquire(est_in + max_out, deadline=deadline, asked=(ask, reply))
        log.debug("teacher_request", session_id=item.session_id, permit_ms=permit.granted_at_ms)
        completion = await ctx.client.complete(messages, max_tokens=max_out,
                                               temperature=ctx.spec.teacher.temperature, session=item,
                                               response_format=ctx.response_format)
    except TeacherCallError:
        # Nothing to pay; a failed request still counts as a request, its tokens do not.
        batch = lua.Batch(ctx.redis)
        if permit is not None:
            ctx.limiter.settle_in(batch, permit, 0)
        ctx.budget.settle_in(batch, reservation, 0.0)
        await batch.execute()
        await ctx.budget.settled(reservation, 0.0)
        raise
    except BaseException:
        await ctx.budget.settle(reservation, 0.0)  # never sent, or its answer never read
        raise
    return Paid(completion, reservation, permit)


async def _book(ctx: TeacherContext, state: SessionLabelling, paid: Paid, attempts_key: str) -> None:
    """Judge a paid answer, and do its bookkeeping in one round trip: the rate-limit permit and the
    budget settled at the real usage, the ledger, the label in the cache, the attempt counter of a
    finished session cleared, the breaker told the provider answered (and read)."""
    completion = paid.completion
    cost, increments = ctx.books.price(completion)
    state.answered(completion, cost)
    batch = lua.Batch(ctx.redis)
    ctx.limiter.settle_in(batch, paid.permit, completion.input_tokens + completion.output_tokens)
    ctx.budget.settle_in(batch, paid.reservation, cost)
    ctx.books.book_in(batch, state, increments)
    if state.done:
        batch.pipe.delete(attempts_key)  # finished: the next delivery starts at one
    at = ctx.breaker.succeeded_in(batch) if ctx.breaker is not None else None
    replies = await batch.execute()
    await ctx.budget.settled(paid.reservation, cost)
    if ctx.breaker is not None and at is not None:
        await ctx.breaker.after_success(replies, at)


async def _breaker_wait(breaker: Breaker, deadline: float) -> BreakerOpen | None:
    """None when a request may go out; while another request probes the provider, wait for its answer."""
    while (blocked := await breaker.check()) is not None and blocked.probing and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return blocked


async def label_session(ctx: TeacherContext, state: SessionLabelling, chunk: ChunkMessage,
                        deadline: float, gate: asyncio.Semaphore) -> SessionResult:
    """Drive one session's state machine with real-time calls, backing off between attempts.

    ``gate`` bounds the requests in flight: it is held from the breaker check to the answer, not
    while an answer is booked or a failed session backs off.
    """
    item = state.item
    started = None  # its first request's turn: the record's latency, as when a session held a slot throughout
    # Failed attempts are counted in Redis: a redelivered chunk does not start again at one.
    attempts_key = keyspace.teacher_attempts(ctx.settings, ctx.spec.name, item.content_hash)
    outages = 0  # outage errors met by this session in this delivery: they back off, uncounted
    while not state.done:
        failure: TeacherCallError | None = None
        async with gate:
            started = started or time.monotonic()
            if ctx.breaker is not None and (blocked := await _breaker_wait(ctx.breaker, deadline)) is not None:
                state.provider_out()
                return SessionResult(item, "paused_provider", detail=blocked.describe())
            try:
                paid = await _call(ctx, item, state.request, deadline)
            except TeacherCallError as exc:
                failure = exc
        if failure is None:
            if paid is None:
                state.budget_refused()
            else:
                await _book(ctx, state, paid, attempts_key)
            continue
        outages += failure.outage
        if not await _failed(ctx, state, failure, attempts_key, outages, deadline):
            return SessionResult(item, "retry_later")
    return _result(ctx, state, chunk, started or time.monotonic())


async def _failed(ctx: TeacherContext, state: SessionLabelling, exc: TeacherCallError, attempts_key: str,
                  outages: int, deadline: float) -> bool:
    """A request that brought no answer: the breaker told, the attempt counted, the session judged;
    then back off before the next request. False when the back-off would pass the deadline."""
    attempt = None
    if exc.outage:
        if ctx.breaker is not None:
            await ctx.breaker.failed(exc.reason, exc.retry_after_s)
    elif ctx.breaker is not None:  # the provider answered (a refusal is an answer): it is up
        await ctx.breaker.succeeded()
    if not exc.outage and exc.retryable and not exc.operational:
        pipe = ctx.redis.pipeline(transaction=False)
        pipe.incr(attempts_key)
        pipe.expire(attempts_key, keyspace.TEACHER_ATTEMPTS_TTL_S)
        attempt = int((await pipe.execute())[0])
    step = state.failed(exc, attempt)
    if isinstance(step, Dead):
        await ctx.redis.delete(attempts_key)  # finished: the next delivery starts at one
    elif isinstance(step, Retry):
        delay = backoff_s(ctx.settings, outages if exc.outage else step.attempt, step.retry_after_s, ctx.rng)
        if time.monotonic() + delay > deadline:
            return False
        log.info("teacher_retry", session_id=state.item.session_id, reason=step.reason,
                 attempt=step.attempt, delay_s=round(delay, 2))
        await asyncio.sleep(delay)
    return True


def _result(ctx: TeacherContext, state: SessionLabelling, chunk: ChunkMessage, started: float) -> SessionResult:
    item, step = state.item, state.step
    if isinstance(step, Halted):
        return SessionResult(item, f"paused_{step.cause}")  # type: ignore[arg-type]
    if isinstance(step, Dead):
        return SessionResult(item, "dead", dead_letter=state.dead_letter(chunk_id=chunk.chunk_id))
    flags = [f"route:{chunk.route}"] + (["replay"] if ctx.client.is_replay else [])
    return SessionResult(item, "labelled", record=state.record(
        model=ctx.client.model, chunk_id=chunk.chunk_id, flags=flags,
        latency_ms=(time.monotonic() - started) * 1000))


async def label_chunk(ctx: TeacherContext, chunk: ChunkMessage, deadline: float) -> list[SessionResult]:
    """Every session of ``chunk``, concurrently (at most ``teacher_concurrency`` requests in flight)."""
    gate = asyncio.Semaphore(ctx.settings.teacher_concurrency)
    if ctx.breaker is None:
        states = await ctx.books.start_all(chunk.sessions)  # the cache, for the whole chunk at once
    else:  # and the breaker, at the same time: the chunk's first requests need not each ask
        states, _ = await asyncio.gather(ctx.books.start_all(chunk.sessions), ctx.breaker.refresh())

    async def one(state: SessionLabelling) -> SessionResult:
        try:
            return await label_session(ctx, state, chunk, deadline, gate)
        except RateLimited:
            return SessionResult(state.item, "retry_later")

    async with asyncio.TaskGroup() as group:  # a Redis failure cancels the rest: the chunk is redelivered
        tasks = [group.create_task(one(state)) for state in states]
    return [t.result() for t in tasks]
