"""``labelq teach --batch-api``: a seed set through the OpenAI Batch API, at half the price.

Rounds: upload the requests, create a batch, poll until it ends, keep every
finished row (label records, cache, ledger, budget), and resubmit only what
did not finish (failed or expired rows) plus one repair request for answers
that broke the contract. A session that fails ``teacher_max_attempts`` rounds
is dead-lettered with its reason.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from labelq import keyspace
from labelq.contract import check, repair_instruction
from labelq.errors import ConfigError, ServiceUnavailable
from labelq.ledger import budget_limit_usd, call_increments, price_usd
from labelq.logging import get_logger
from labelq.records import commit_chunk
from labelq.redis_server import resolve_redis_url
from labelq.render import render_for_task
from labelq.schemas import DeadLetter, LabelRecord, SessionItem
from labelq.settings import Settings
from labelq.spec import TaskSpec
from labelq.store import ObjectStore
from producer.validate import Accepted
from workers.teacher.budget import Budget
from workers.teacher.prompt import build_messages, estimate_prompt_tokens, repair_messages

log = get_logger(__name__)
BATCH_DISCOUNT = 0.5
DONE = {"completed", "expired", "failed", "cancelled"}


@dataclass
class _Pending:
    session: Accepted
    payload: dict[str, Any]
    messages: list[dict[str, str]]
    attempts: int = 0
    repaired: bool = False
    last_error: str = ""


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


def _request_row(model: str, spec: TaskSpec, custom_id: str, messages: list[dict[str, str]]) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": model, "messages": messages,
                                  "max_tokens": spec.teacher.max_output_tokens,
                                  "temperature": spec.teacher.temperature}})


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

    def _cache_key(self, content_hash: str) -> str:
        return keyspace.teacher_cache(self.settings, self.model, self.spec.prompt_version, content_hash)

    async def run(self, sessions: list[tuple[Accepted, dict[str, Any]]]) -> BatchSummary:
        import openai

        s = self.settings
        key = s.teacher_api_key.get_secret_value() if s.teacher_api_key else "not-set"
        api = openai.AsyncOpenAI(base_url=s.teacher_base_url, api_key=key, timeout=s.teacher_timeout_s,
                                 max_retries=3)
        aredis = aioredis.from_url(resolve_redis_url(s))
        budget = Budget(aredis, keyspace.budget_keys(s, self.spec.name), budget_limit_usd(s, self.spec))
        try:
            pending = self._initial(sessions)
            while pending:
                self.summary.rounds += 1
                pending = await self._round(api, budget, aredis, pending)
        finally:
            await api.close()
            await aredis.aclose()
        return self.summary

    def _initial(self, sessions: list[tuple[Accepted, dict[str, Any]]]) -> dict[str, _Pending]:
        pending: dict[str, _Pending] = {}
        self.summary.sessions = len(sessions)
        for accepted, payload in sessions:
            if accepted.content_hash in pending:
                continue
            if self.redis.exists(self._cache_key(accepted.content_hash)):
                self.summary.cached += 1  # paid for already: never twice
                continue
            rendered = render_for_task(self.spec, self.settings, payload)
            pending[accepted.content_hash] = _Pending(accepted, payload, build_messages(self.spec, rendered))
        return pending

    async def _round(self, api: Any, budget: Budget, aredis: aioredis.Redis,
                     pending: dict[str, _Pending]) -> dict[str, _Pending]:
        max_out = self.spec.teacher.max_output_tokens
        worst = sum(price_usd(self.settings, self.model, estimate_prompt_tokens(p.messages), max_out,
                              discount=BATCH_DISCOUNT) for p in pending.values())
        reservation = await budget.reserve(worst)
        if reservation is None:
            raise ServiceUnavailable(f"teacher budget too small for this batch (worst case ${worst:.4f}); "
                                     "raise LABELQ_TEACHER_BUDGET_USD")
        spent = 0.0
        try:
            data = b"\n".join(_request_row(self.model, self.spec, h, p.messages) for h, p in pending.items())
            upload = await api.files.create(file=("labelq-batch.jsonl", io.BytesIO(data)), purpose="batch")
            batch = await api.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                             completion_window="24h",
                                             metadata={"labelq_task": self.spec.name})
            self.summary.batches.append(batch.id)
            while batch.status not in DONE:
                self.on_status(f"batch {batch.id}: {batch.status}")
                await asyncio.sleep(self.poll_s)
                batch = await api.batches.retrieve(batch.id)
            self.on_status(f"batch {batch.id}: {batch.status}")
            rows: list[dict[str, Any]] = []
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    content = await api.files.content(file_id)
                    rows.extend(orjson.loads(line) for line in content.read().splitlines() if line.strip())
            records, spent = await self._ingest_rows(batch.id, rows, pending, aredis)
        finally:
            await budget.settle(reservation, spent)
        self.summary.cost_usd += spent
        labelled = {r.content_hash for r in records}
        inputs = [SessionItem(session_id=p.session.session_id, content_hash=h, payload=p.payload)
                  for h, p in pending.items() if h in labelled]
        commit_chunk(self.settings, self.store, self.redis, stage="teacher", task=self.spec.name,
                     chunk_id=f"batch-{batch.id}", records=records, dead_letters=[], inputs=inputs)
        return self._next_round(pending)

    async def _ingest_rows(self, batch_id: str, rows: list[dict[str, Any]], pending: dict[str, _Pending],
                           aredis: aioredis.Redis) -> tuple[list[LabelRecord], float]:
        records: list[LabelRecord] = []
        spent = 0.0
        for row in rows:
            item = pending.get(row.get("custom_id", ""))
            if item is None:
                continue
            response = row.get("response") or {}
            if row.get("error") or response.get("status_code") != 200:
                error = row.get("error") or {}
                item.last_error = f"batch_{error.get('code') or response.get('status_code')}"
                continue
            body = response["body"]
            usage = body.get("usage") or {}
            p_tok, c_tok = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
            cost = price_usd(self.settings, self.model, p_tok, c_tok, discount=BATCH_DISCOUNT)
            spent += cost
            pipe = aredis.pipeline(transaction=False)
            for k, name, n in call_increments(self.settings, task=self.spec.name, model=self.model,
                                              input_tokens=p_tok, output_tokens=c_tok, cost_usd=cost):
                pipe.hincrby(k, name, n)
            await pipe.execute()
            text = body["choices"][0]["message"]["content"] or ""
            verdict = check(text, self.spec.contract)
            if not verdict.ok:
                item.last_error = "contract_violation"
                if not item.repaired:
                    item.repaired = True
                    item.messages = repair_messages(item.messages, text,
                                                    repair_instruction(verdict, self.spec.contract))
                    item.attempts -= 1  # a repair is not a failed attempt
                else:
                    item.attempts = self.settings.teacher_max_attempts  # one repair only
                    item.last_error = f"contract_violation: {text[:500]}"
                continue
            records.append(LabelRecord(
                session_id=item.session.session_id, content_hash=item.session.content_hash,
                task=self.spec.name, label=verdict.label, source="teacher", model=self.model,
                prompt_version=self.spec.prompt_version, words=verdict.words, input_tokens=p_tok,
                output_tokens=c_tok, cost_usd=round(cost, 8), chunk_id=f"batch-{batch_id}",
                flags=["batch_api", "route:seed"] + (["repaired"] if item.repaired else [])))
            await aredis.set(self._cache_key(item.session.content_hash),
                             orjson.dumps({"label": verdict.label, "words": verdict.words}),
                             ex=self.settings.teacher_cache_ttl_s)
            item.last_error = "done"
        self.summary.labelled += len(records)
        return records, spent

    def _next_round(self, pending: dict[str, _Pending]) -> dict[str, _Pending]:
        nxt: dict[str, _Pending] = {}
        dead: list[DeadLetter] = []
        for h, item in pending.items():
            if item.last_error == "done":
                continue
            item.attempts += 1
            if item.attempts >= self.settings.teacher_max_attempts:
                reason = "contract_violation" if item.last_error.startswith("contract") else "batch_failed"
                raw = item.last_error.split(": ", 1)[1] if ": " in item.last_error else None
                dead.append(DeadLetter(reason=reason, stage="teacher", task=self.spec.name,
                                       session_id=item.session.session_id, content_hash=h, raw=raw,
                                       detail=f"{item.last_error or 'missing from output'} "
                                              f"after {item.attempts} rounds"))
            else:
                item.last_error = item.last_error or "missing"
                nxt[h] = item
        if dead:
            self.summary.dead_lettered += len(dead)
            commit_chunk(self.settings, self.store, self.redis, stage="teacher", task=self.spec.name,
                         chunk_id=f"batch-dead-{int(time.time() * 1000)}", records=[], dead_letters=dead)
        for item in nxt.values():
            item.last_error = ""
        return nxt
