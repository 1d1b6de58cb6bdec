"""``labelq teach --batch-api``: a seed set through the OpenAI Batch API, at half the price, that
survives being killed.

Rounds: split the requests into parts at the provider's limits (``LABELQ_TEACHER_BATCH_MAX_REQUESTS``,
``LABELQ_TEACHER_BATCH_MAX_BYTES``), reserve each part's worst case from the budget for as long
as a batch may run, upload it and create its batch, poll until every batch ends, keep every
finished row (label records, cache, ledger, budget), and send in the next round only what did not
finish (failed or expired rows) plus one repair request for answers that broke the contract. A
session that fails ``teacher_max_attempts`` rounds is dead-lettered with its reason.

Every step is in the store first (``batch_job.py``): a killed run, taught the same input again,
finds its batches on the provider and resumes them; nothing is submitted twice, and a part's spend
goes into the ledger and the budget once (a Redis marker per part, in one transaction with them).
One run at a time per job (a Redis lock, renewed while polling).

Each session goes through the same state machine (``session.py``) and the same cache and ledger
(``books.py``) as in the real-time teacher; only the sending differs.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from labelq import keyspace, lua
from labelq.contract import spec_response_format
from labelq.errors import ConfigError, ServiceUnavailable
from labelq.ledger import budget_limit_usd, price_usd, to_micro
from labelq.logging import get_logger
from labelq.records import commit_chunk
from labelq.redis_server import resolve_redis_url
from labelq.schemas import SessionItem
from labelq.settings import Settings
from labelq.spec import TaskSpec
from labelq.store import ObjectStore
from workers.teacher.batch_job import (
    JobFiles,
    Part,
    PartFiles,
    SavedReservation,
    SavedSession,
    Sent,
    Settled,
    create_job,
    input_hash,
    open_unfinished,
    part_name,
    part_tag,
    split_rows,
)
from workers.teacher.books import TeacherBooks
from workers.teacher.budget import Budget, SpendWriter
from workers.teacher.client import Completion, TeacherCallError
from workers.teacher.preflight import check_teacher
from workers.teacher.prompt import Messages, estimate_prompt_tokens
from workers.teacher.reasoning import length_params, output_token_cap, usage_tokens
from workers.teacher.session import Dead, Labelled, SessionLabelling

log = get_logger(__name__)
BATCH_DISCOUNT = 0.5
DONE = {"completed", "expired", "failed", "cancelled"}
FLAGS = ["batch_api", "route:seed"]
COMPLETION_WINDOW = "24h"
# A part's reservation lives as long as its batch may (the 24 h window and an hour to collect it),
# and is extended on every poll: a killed run's batch keeps its money reserved until a rerun settles it.
BATCH_RESERVATION_TTL_MS = 25 * 3_600_000
LIST_LOOKBACK_S = 600  # a batch adopted after a kill was created at most this long before its part file


@dataclass
class BatchSummary:
    sessions: int = 0
    labelled: int = 0
    cached: int = 0
    dead_lettered: int = 0
    rounds: int = 0
    batches: list[str] = field(default_factory=list)  # created or resumed by this run
    resumed: int = 0  # batches of an earlier, killed run that this run collected
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def request_row(settings: Settings, spec: TaskSpec, custom_id: str, messages: Messages) -> bytes:
    model = settings.teacher_model
    limits = length_params(settings, model, output_token_cap(settings, spec, model), spec.teacher.temperature)
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": model, "messages": messages, **limits,
                                  **({} if (fmt := spec_response_format(spec)) is None else {"response_format": fmt})}})


def parse_row(row: dict[str, Any], model: str) -> Completion | TeacherCallError:
    """One row of a batch's output or error file: the answer, or why there is none."""
    response = row.get("response") or {}
    if row.get("error") or response.get("status_code") != 200:
        code = (row.get("error") or {}).get("code") or response.get("status_code")
        # The provider's trouble (rate limit, server error, an expired batch), not the session's:
        # retried in the next round, never counted toward the session's attempts.
        outage = (isinstance(code, int) and (code == 429 or code >= 500)) or code in _OUTAGE_CODES
        return TeacherCallError("batch_failed", f"batch row failed: {code}", retryable=True, outage=outage)
    body = response["body"]
    input_tokens, output_tokens = usage_tokens({"prompt_tokens": 0, "completion_tokens": 0,
                                                **(body.get("usage") or {})})  # reasoning counted once
    return Completion(body["choices"][0]["message"]["content"] or "", input_tokens, output_tokens,
                      str(body.get("model") or model))


_OUTAGE_CODES = {"batch_expired", "rate_limit_exceeded", "server_error", "insufficient_quota", "timeout"}
MISSING = TeacherCallError("batch_failed", "missing from the batch output", outage=True)


class JobLock:
    """One run of a job at a time: a Redis lock renewed while the run polls."""

    def __init__(self, client: aioredis.Redis, key: str, ttl_s: int) -> None:
        self.client, self.key, self.ttl_s = client, key, ttl_s
        self.token = uuid.uuid4().hex

    async def acquire(self, on_status: Callable[[str], None]) -> None:
        """Wait for a killed run's lock to lapse (at most two of its lifetimes), else refuse."""
        deadline = time.monotonic() + 2 * self.ttl_s
        while not await self.client.set(self.key, self.token, nx=True, ex=self.ttl_s):
            if time.monotonic() > deadline:
                raise ServiceUnavailable("another `labelq teach --batch-api` is running this input "
                                         f"(lock {self.key}); wait for it to finish")
            on_status("waiting for another run of this batch job to finish or lapse")
            await asyncio.sleep(1.0)

    async def renew(self) -> None:
        if not await lua.script(self.client, "lock_renew")(keys=[self.key], args=[self.token, self.ttl_s]):
            raise ServiceUnavailable(f"lost the batch job lock {self.key} (another run took it)")

    async def release(self) -> None:
        await lua.script(self.client, "lock_release")(keys=[self.key], args=[self.token])


@dataclass
class OpenPart:
    """A part whose batch is submitted and not yet settled."""

    part: Part
    sent: Sent
    states: dict[str, SessionLabelling]


class BatchTeacher:
    def __init__(self, settings: Settings, spec: TaskSpec, store: ObjectStore, client: redis.Redis,
                 *, poll_s: float, on_status: Callable[[str], None]) -> None:
        if settings.teacher_backend != "openai":
            raise ConfigError("batch mode needs an OpenAI-compatible API, not the replay teacher: set "
                              "LABELQ_TEACHER_BACKEND=openai and OPENAI_API_KEY (or LABELQ_TEACHER_API_KEY)")
        check_teacher(settings)  # a usable key and a priced model, before anything is uploaded
        self.settings, self.spec, self.store, self.redis = settings, spec, store, client
        self.poll_s = poll_s
        self.on_status = on_status
        self.model = settings.teacher_model
        self.summary = BatchSummary()

    async def run(self, sessions: list[SessionItem]) -> BatchSummary:
        import openai

        s = self.settings
        key = s.teacher_api_key.get_secret_value() if s.teacher_api_key else "not-set"
        api = openai.AsyncOpenAI(base_url=s.teacher_base_url, api_key=key, timeout=s.teacher_timeout_s,
                                 max_retries=3)
        aredis = aioredis.from_url(resolve_redis_url(s))
        try:
            await self._run(api, aredis, sessions)
        finally:
            await api.close()
            await aredis.aclose()
        return self.summary

    async def _run(self, api: Any, aredis: aioredis.Redis, sessions: list[SessionItem]) -> None:
        books = TeacherBooks(self.settings, self.spec, aredis, self.model)
        unique = {item.content_hash: item for item in sessions}
        self.summary.sessions = len(sessions)
        ihash = input_hash(self.spec, self.model, unique)
        job = await asyncio.to_thread(open_unfinished, self.store, self.spec, ihash)
        carry: dict[str, SessionLabelling] = {}
        if job is None:
            for h, item in unique.items():
                state = await books.start(item)
                if state.done:
                    self.summary.cached += 1  # paid for already: never twice
                else:
                    carry[h] = state
            if not carry:
                return
            job = await asyncio.to_thread(create_job, self.store, self.spec, self.model, ihash,
                                          [state.item for state in carry.values()])
        lock = JobLock(aredis, keyspace.batch_lock(self.settings, self.spec.name, job.info.key),
                       ttl_s=int(self.poll_s * 3) + 10)
        await lock.acquire(self.on_status)
        try:
            writer = SpendWriter(self.store, self.spec.name, job.info.writer, block_micro=0)
            budget = Budget(aredis, self.settings, self.spec.name, budget_limit_usd(self.settings, self.spec),
                            writer)
            runner = _JobRunner(self, api, aredis, books, budget, job, lock)
            await runner.run(carry)
        finally:
            await lock.release()


class _JobRunner:
    """One run of one job: resume what the store says, then round after round until done."""

    def __init__(self, teacher: BatchTeacher, api: Any, aredis: aioredis.Redis, books: TeacherBooks,
                 budget: Budget, job: JobFiles, lock: JobLock) -> None:
        self.t, self.api, self.redis, self.books, self.budget, self.job, self.lock = (
            teacher, api, aredis, books, budget, job, lock)
        self.settings, self.spec, self.summary = teacher.settings, teacher.spec, teacher.summary

    async def run(self, carry: dict[str, SessionLabelling]) -> None:
        parts = await asyncio.to_thread(self.job.parts)
        items = {item.content_hash: item for item in await asyncio.to_thread(self.job.sessions)}
        if parts:
            await self._restate_spend(parts)
        if not carry:  # resuming: round 1 is every session not in a part of round 1 and not cached
            in_round_one = {h for p in parts.values() if p.part.round == 1 for h in p.part.sessions}
            for h, item in items.items():
                if h not in in_round_one:
                    state = await self.books.start(item)
                    if state.done:
                        self.summary.cached += 1
                    else:
                        carry[h] = state
        round_ = 1
        while True:
            this_round = {n: p for n, p in parts.items() if p.part.round == round_}
            if not carry and not this_round:
                break
            self.summary.rounds += 1
            carry = await self._round(round_, carry, this_round, items)
            round_ += 1
        summary = self.summary.to_dict()
        await asyncio.to_thread(self.job.finish, summary)

    async def _restate_spend(self, parts: dict[str, PartFiles]) -> None:
        """The job's durable spend from its own parts: settled at cost, open at their reservation (a
        reservation made before a kill but never written into a part never reached the provider)."""
        committed: dict[str, int] = {}
        for p in parts.values():
            r = p.part.reservation
            committed[r.period_id] = committed.get(r.period_id, 0) + (
                p.settled.spent_micro if p.settled else r.micro_usd)
        for pid, micro in committed.items():
            await asyncio.to_thread(self.budget.writer.restate, pid, micro)

    async def _round(self, round_: int, carry: dict[str, SessionLabelling], existing: dict[str, PartFiles],
                     items: dict[str, SessionItem]) -> dict[str, SessionLabelling]:
        """One round: resume its parts, submit the rest, settle them all; what goes to the next round."""
        following: dict[str, SessionLabelling] = {}
        open_parts: list[OpenPart] = []
        for files in existing.values():
            if files.settled is not None:
                self._count(files.settled)
                following.update({h: saved.restore(self.spec, self.settings, items[h])
                                  for h, saved in files.settled.retry.items()})
                continue
            states = {h: saved.restore(self.spec, self.settings, items[h]) for h, saved in files.part.sessions.items()}
            sent = files.sent or await self._adopt_or_submit(files.part, states)
            self.summary.resumed += 1
            self.summary.batches.append(sent.batch_id)
            open_parts.append(OpenPart(files.part, sent, states))
        taken = {h for files in existing.values() for h in files.part.sessions}
        remaining = {h: s for h, s in carry.items() if h not in taken}
        short_usd, unsent = await self._submit_new(round_, len(existing), remaining, open_parts)
        following.update(await self._wait_and_settle(open_parts))
        if unsent:
            raise ServiceUnavailable(
                f"teacher budget too small for the rest of this batch job (worst case ${short_usd:.4f} for "
                f"{unsent} sessions not sent); raise LABELQ_TEACHER_BUDGET_USD (or wait for the next "
                "LABELQ_TEACHER_BUDGET_PERIOD) and run the same `labelq teach --batch-api` again: it resumes "
                "without paying twice")
        return following

    async def _submit_new(self, round_: int, first_index: int, remaining: dict[str, SessionLabelling],
                          open_parts: list[OpenPart]) -> tuple[float, int]:
        """Split, reserve, record and submit new parts; the worst case and the number of sessions
        left unsent for want of budget."""
        s = self.settings
        rows = [(h, request_row(self.settings, self.spec, h, state.request)) for h, state in remaining.items()]
        try:
            chunks = split_rows(rows, max_requests=s.teacher_batch_max_requests, max_bytes=s.teacher_batch_max_bytes)
        except ValueError as exc:
            raise ConfigError(f"{exc}: raise LABELQ_TEACHER_BATCH_MAX_BYTES (the provider allows 200 MB)") from exc
        short, unsent = 0.0, 0
        for index, chunk in enumerate(chunks, first_index + 1):
            states = {h: remaining[h] for h, _ in chunk}
            worst = sum(self._worst(state.request) for state in states.values())
            reservation = None if unsent else await self.budget.reserve(worst, ttl_ms=BATCH_RESERVATION_TTL_MS)
            if reservation is None:
                short, unsent = short + worst, unsent + len(states)  # a rerun with more budget sends them
                continue
            part = Part(name=part_name(round_, index), round=round_, reservation=SavedReservation.of(reservation),
                        sessions={h: SavedSession.of(state) for h, state in states.items()})
            await asyncio.to_thread(self.job.write, f"{part.name}.part.json", part)
            sent = await self._submit(part, b"\n".join(row for _, row in chunk))
            self.summary.batches.append(sent.batch_id)
            open_parts.append(OpenPart(part, sent, states))
        return short, unsent

    def _worst(self, request: Messages) -> float:
        return price_usd(self.settings, self.t.model, estimate_prompt_tokens(request),  # thinking room too
                         output_token_cap(self.settings, self.spec, self.t.model), discount=BATCH_DISCOUNT)

    async def _submit(self, part: Part, data: bytes) -> Sent:
        upload = await self.api.files.create(file=("labelq-batch.jsonl", io.BytesIO(data)), purpose="batch")
        batch = await self.api.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window=COMPLETION_WINDOW,
            metadata={"labelq_task": self.spec.name, "labelq_part": part_tag(self.job.info, part.name)})
        sent = Sent(batch_id=str(batch.id), input_file_id=str(upload.id))
        await asyncio.to_thread(self.job.write, f"{part.name}.sent.json", sent)
        log.info("teacher_batch_submitted", part=part.name, batch_id=sent.batch_id, requests=len(part.sessions))
        return sent

    async def _adopt_or_submit(self, part: Part, states: dict[str, SessionLabelling]) -> Sent:
        """A part recorded but not known as sent: its batch if the provider has it (the run was
        killed right after creating it), else submit it now."""
        tag = part_tag(self.job.info, part.name)
        async for batch in self.api.batches.list(limit=100):
            if (batch.metadata or {}).get("labelq_part") == tag:
                sent = Sent(batch_id=str(batch.id), input_file_id=str(batch.input_file_id))
                await asyncio.to_thread(self.job.write, f"{part.name}.sent.json", sent)
                log.info("teacher_batch_adopted", part=part.name, batch_id=sent.batch_id)
                return sent
            if batch.created_at < part.created_at_s - LIST_LOOKBACK_S:
                break  # listed newest first: older batches cannot be this part's
        return await self._submit(part, b"\n".join(request_row(self.settings, self.spec, h, state.request)
                                                   for h, state in states.items()))

    async def _wait_and_settle(self, open_parts: list[OpenPart]) -> dict[str, SessionLabelling]:
        """Poll every open batch until it ends, settling each as it does; the sessions to send again."""
        following: dict[str, SessionLabelling] = {}
        waiting = list(open_parts)
        while waiting:
            await self.lock.renew()
            still: list[OpenPart] = []
            for open_part in waiting:
                batch = await self.api.batches.retrieve(open_part.sent.batch_id)
                self.t.on_status(f"batch {batch.id}: {batch.status}")
                if batch.status in DONE:
                    following.update(await self._settle(open_part, batch))
                else:
                    await self.budget.extend(open_part.part.reservation.reservation(), BATCH_RESERVATION_TTL_MS)
                    still.append(open_part)
            waiting = still
            if waiting:
                await asyncio.sleep(self.t.poll_s)
        return following

    async def _collect(self, batch: Any) -> dict[str, Completion | TeacherCallError]:
        answers: dict[str, Completion | TeacherCallError] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await self.api.files.content(file_id)
                for line in content.read().splitlines():
                    if line.strip():
                        row = orjson.loads(line)
                        answers[str(row.get("custom_id", ""))] = parse_row(row, self.t.model)
        return answers

    async def _settle(self, open_part: OpenPart, batch: Any) -> dict[str, SessionLabelling]:
        """Keep a finished batch's rows: ledger and budget once, cache, records; then its settled file."""
        part, states = open_part.part, open_part.states
        answers = await self._collect(batch)
        paid: list[tuple[SessionLabelling, Completion, float]] = []
        increments: list[tuple[str, str, int]] = []
        spent = 0.0
        for h, state in states.items():
            answer = answers.get(h, MISSING)
            if isinstance(answer, TeacherCallError):
                state.failed(answer)  # a round is one attempt
                continue
            cost, incs = self.books.price(answer, discount=BATCH_DISCOUNT)
            spent += cost
            increments += incs
            paid.append((state, answer, cost))
        reservation = part.reservation.reservation()
        marker = keyspace.batch_settled(self.settings, self.spec.name, self.job.info.key, part.name)
        if await self.redis.exists(marker):  # counted before a kill: only the durable books are left
            await asyncio.to_thread(self.budget.writer.settle, reservation.period_id, reservation.micro_usd,
                                    to_micro(spent))
        else:
            pipe = self.redis.pipeline(transaction=True)
            for key, name, n in increments:
                pipe.hincrby(key, name, n)
            await self.budget.settle(reservation, spent, pipe=pipe)
            pipe.set(marker, 1, ex=keyspace.BATCH_SETTLED_TTL_S)
            await pipe.execute()
        await asyncio.to_thread(self.budget.writer.trim)  # the durable record: the exact spend
        for state, answer, cost in paid:
            await self.books.judge(state, answer, cost)
        chunk_id = f"batch-{open_part.sent.batch_id}"
        labelled = [s for s in states.values() if isinstance(s.step, Labelled)]
        dead = [s for s in states.values() if isinstance(s.step, Dead)]
        await asyncio.to_thread(
            commit_chunk, self.settings, self.t.store, self.t.redis, stage="teacher", task=self.spec.name,
            chunk_id=chunk_id, records=[s.record(model=self.t.model, chunk_id=chunk_id, flags=FLAGS) for s in labelled],
            dead_letters=[s.dead_letter(chunk_id=chunk_id) for s in dead], inputs=[s.item for s in labelled])
        retry = {h: s for h, s in states.items() if not s.done}
        settled = Settled(batch_id=open_part.sent.batch_id, status=str(batch.status), spent_micro=to_micro(spent),
                          labelled=[s.item.content_hash for s in labelled], dead=[s.item.content_hash for s in dead],
                          retry={h: SavedSession.of(s) for h, s in retry.items()})
        await asyncio.to_thread(self.job.write, f"{part.name}.settled.json", settled)
        self._count(settled)
        self.summary.cost_usd += spent
        return retry

    def _count(self, settled: Settled) -> None:
        self.summary.labelled += len(settled.labelled)
        self.summary.dead_lettered += len(settled.dead)
