"""``labelq teach --batch-api``: a seed set through the OpenAI Batch API, at half the price.

Rounds: upload the requests, create a batch, poll until it ends, keep every
finished row (label records, cache, ledger, budget), and resubmit only what
did not finish (failed or expired rows) plus one repair request for answers
that broke the contract. A session that fails ``teacher_max_attempts`` rounds
is dead-lettered with its reason.

Each session goes through the same state machine (``session.py``) and the
same cache and ledger (``books.py``) as in the real-time teacher; only the
sending differs: one batch file a round, the whole round's worst case
reserved from the budget at once, and a round counting as one attempt.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from labelq import keyspace
from labelq.errors import ConfigError, ServiceUnavailable
from labelq.ledger import budget_limit_usd, price_usd
from labelq.logging import get_logger
from labelq.records import commit_chunk
from labelq.redis_server import resolve_redis_url
from labelq.schemas import SessionItem
from labelq.settings import Settings
from labelq.spec import TaskSpec
from labelq.store import ObjectStore
from workers.teacher.books import TeacherBooks
from workers.teacher.budget import Budget
from workers.teacher.client import Completion, TeacherCallError
from workers.teacher.prompt import Messages, estimate_prompt_tokens
from workers.teacher.session import Dead, Labelled, SessionLabelling

log = get_logger(__name__)
BATCH_DISCOUNT = 0.5
DONE = {"completed", "expired", "failed", "cancelled"}
FLAGS = ["batch_api", "route:seed"]


@dataclass
class BatchSummary:
    sessions: int = 0
    labelled: int = 0
    cached: int = 0
    dead_lettered: int = 0
    rounds: int = 0
    batches: list[str] = field(default_factory=list)
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def request_row(model: str, spec: TaskSpec, custom_id: str, messages: Messages) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": model, "messages": messages,
                                  "max_tokens": spec.teacher.max_output_tokens,
                                  "temperature": spec.teacher.temperature}})


def parse_row(row: dict[str, Any], model: str) -> Completion | TeacherCallError:
    """One row of a batch's output or error file: the answer, or why there is none."""
    response = row.get("response") or {}
    if row.get("error") or response.get("status_code") != 200:
        code = (row.get("error") or {}).get("code") or response.get("status_code")
        return TeacherCallError("batch_failed", f"batch row failed: {code}", retryable=True)
    body = response["body"]
    usage = body.get("usage") or {}
    return Completion(body["choices"][0]["message"]["content"] or "", int(usage.get("prompt_tokens", 0)),
                      int(usage.get("completion_tokens", 0)), str(body.get("model") or model))


MISSING = TeacherCallError("batch_failed", "missing from the batch output", retryable=True)


class BatchTeacher:
    def __init__(self, settings: Settings, spec: TaskSpec, store: ObjectStore, client: redis.Redis,
                 *, poll_s: float, on_status: Callable[[str], None]) -> None:
        if settings.resolved_teacher_backend != "openai":
            raise ConfigError("batch mode needs an OpenAI-compatible API: set OPENAI_API_KEY "
                              "(or LABELQ_TEACHER_API_KEY) or LABELQ_TEACHER_BASE_URL")
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
        books = TeacherBooks(s, self.spec, aredis, self.model)
        budget = Budget(aredis, keyspace.budget_keys(s, self.spec.name), budget_limit_usd(s, self.spec))
        try:
            pending = await self._initial(books, sessions)
            while pending:
                self.summary.rounds += 1
                pending = await self._round(api, budget, books, pending)
        finally:
            await api.close()
            await aredis.aclose()
        return self.summary

    async def _initial(self, books: TeacherBooks, sessions: list[SessionItem]) -> dict[str, SessionLabelling]:
        pending: dict[str, SessionLabelling] = {}
        self.summary.sessions = len(sessions)
        for item in sessions:
            if item.content_hash in pending:
                continue
            state = await books.start(item)
            if state.done:
                self.summary.cached += 1  # paid for already: never twice
                continue
            pending[item.content_hash] = state
        return pending

    async def _round(self, api: Any, budget: Budget, books: TeacherBooks,
                     pending: dict[str, SessionLabelling]) -> dict[str, SessionLabelling]:
        max_out = self.spec.teacher.max_output_tokens
        worst = sum(price_usd(self.settings, self.model, estimate_prompt_tokens(p.request), max_out,
                              discount=BATCH_DISCOUNT) for p in pending.values())
        reservation = await budget.reserve(worst)
        if reservation is None:
            raise ServiceUnavailable(f"teacher budget too small for this batch (worst case ${worst:.4f}); "
                                     "raise LABELQ_TEACHER_BUDGET_USD")
        spent = 0.0
        try:
            batch_id, answers = await self._send_and_collect(api, pending)
            for h, state in pending.items():
                answer = answers.get(h, MISSING)
                if isinstance(answer, TeacherCallError):
                    state.failed(answer)  # a round is one attempt
                    continue
                cost = await books.charge(answer, discount=BATCH_DISCOUNT)
                spent += cost
                await books.judge(state, answer, cost)
        finally:
            await budget.settle(reservation, spent)
        self.summary.cost_usd += spent
        self._commit(f"batch-{batch_id}", list(pending.values()))
        return {h: state for h, state in pending.items() if not state.done}

    async def _send_and_collect(self, api: Any, pending: dict[str, SessionLabelling]
                                ) -> tuple[str, dict[str, Completion | TeacherCallError]]:
        """One batch of every pending request; its answers by content hash (missing rows absent)."""
        data = b"\n".join(request_row(self.model, self.spec, h, p.request) for h, p in pending.items())
        upload = await api.files.create(file=("labelq-batch.jsonl", io.BytesIO(data)), purpose="batch")
        batch = await api.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                         completion_window="24h", metadata={"labelq_task": self.spec.name})
        self.summary.batches.append(batch.id)
        while batch.status not in DONE:
            self.on_status(f"batch {batch.id}: {batch.status}")
            await asyncio.sleep(self.poll_s)
            batch = await api.batches.retrieve(batch.id)
        self.on_status(f"batch {batch.id}: {batch.status}")
        answers: dict[str, Completion | TeacherCallError] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await api.files.content(file_id)
                for line in content.read().splitlines():
                    if line.strip():
                        row = orjson.loads(line)
                        answers[str(row.get("custom_id", ""))] = parse_row(row, self.model)
        return str(batch.id), answers

    def _commit(self, chunk_id: str, states: list[SessionLabelling]) -> None:
        """This round's labels and dead letters, written once under the batch's id."""
        labelled = [s for s in states if isinstance(s.step, Labelled)]
        dead = [s for s in states if isinstance(s.step, Dead)]
        self.summary.labelled += len(labelled)
        self.summary.dead_lettered += len(dead)
        commit_chunk(self.settings, self.store, self.redis, stage="teacher", task=self.spec.name,
                     chunk_id=chunk_id, records=[s.record(model=self.model, chunk_id=chunk_id, flags=FLAGS)
                                                 for s in labelled],
                     dead_letters=[s.dead_letter(chunk_id=chunk_id) for s in dead],
                     inputs=[s.item for s in labelled])
