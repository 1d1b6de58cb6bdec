"""The Redis side of labelling a session, the same in both teacher modes: cache and ledger.

* ``start``: a session's state, already labelled when the cache holds the
  same (model, prompt version, content hash) (the hit is counted in the ledger),
  else waiting for its first request. Nothing is paid for twice. ``start_all``
  does a whole chunk in one round trip (two with cache hits).
* ``price``: an answer's cost and the ledger increments that record it (not applied);
  ``book_in`` queues them, and the label in the cache, on a batch that settles the call.
* ``judge``: let the session's state judge a paid answer; a valid label is cached.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import redis.asyncio as aioredis

from labelq import keyspace, lua
from labelq.ledger import call_increments, price_usd
from labelq.schemas import SessionItem
from labelq.settings import Settings
from labelq.spec import TaskSpec
from workers.teacher.client import Completion
from workers.teacher.session import Answered, CachedLabel, Labelled, SessionLabelling


class TeacherBooks:
    """Cache and ledger of one task spec and one teacher model."""

    def __init__(self, settings: Settings, spec: TaskSpec, client: aioredis.Redis, model: str) -> None:
        self.settings, self.spec, self.redis, self.model = settings, spec, client, model

    def cache_key(self, content_hash: str) -> str:
        return keyspace.teacher_cache(self.settings, self.model, self.spec.prompt_version, content_hash)

    async def start_all(self, items: Sequence[SessionItem]) -> list[SessionLabelling]:
        """``start`` for every item, in one round trip (one more to count the cache hits)."""
        if not items:
            return []
        found = await self.redis.mget([self.cache_key(item.content_hash) for item in items])
        states = []
        for item, cached in zip(items, found, strict=True):
            hit = None
            if cached is not None:
                entry = orjson.loads(cached)
                hit = CachedLabel(entry["label"], entry["words"])
            states.append(SessionLabelling.start(self.spec, self.settings, item, hit))
        if hits := sum(1 for cached in found if cached is not None):
            await self.redis.hincrby(keyspace.ledger(self.settings, self.spec.name), keyspace.LEDGER_CACHE_HITS, hits)
        return states

    async def start(self, item: SessionItem) -> SessionLabelling:
        return (await self.start_all([item]))[0]

    def price(self, completion: Completion, *, discount: float = 1.0) -> tuple[float, list[tuple[str, str, int]]]:
        """The answer's cost in dollars and the ledger increments that record it (not applied)."""
        cost = price_usd(self.settings, self.model, completion.input_tokens, completion.output_tokens,
                         discount=discount)
        return cost, call_increments(self.settings, task=self.spec.name, model=self.model,
                                     input_tokens=completion.input_tokens,
                                     output_tokens=completion.output_tokens, cost_usd=cost)

    def book_in(self, batch: lua.Batch, state: SessionLabelling, increments: list[tuple[str, str, int]]) -> None:
        """Queue an answer's ledger increments on ``batch``, and its label in the cache when the
        answer labelled the session (``state`` has judged it)."""
        for key, name, n in increments:
            batch.pipe.hincrby(key, name, n)
        step = state.step
        if isinstance(step, Labelled) and not step.cached:
            batch.pipe.set(self.cache_key(state.item.content_hash),
                           orjson.dumps({"label": step.label, "words": step.words}),
                           ex=self.settings.teacher_cache_ttl_s)

    async def judge(self, state: SessionLabelling, completion: Completion, cost_usd: float) -> Answered:
        step = state.answered(completion, cost_usd)
        if isinstance(step, Labelled):
            await self.redis.set(self.cache_key(state.item.content_hash),
                                 orjson.dumps({"label": step.label, "words": step.words}),
                                 ex=self.settings.teacher_cache_ttl_s)
        return step
