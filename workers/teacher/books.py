"""The Redis side of labelling a session, the same in both teacher modes: cache and ledger.

* ``start``: a session's state, already labelled when the cache holds the
  same (model, prompt version, content hash) (the hit is counted in the ledger),
  else waiting for its first request. Nothing is paid for twice.
* ``charge``: price one paid answer and add it to the ledger (tokens, dollars); ``price`` gives
  the increments without applying them (the Batch API applies a whole batch's at once).
* ``judge``: let the session's state judge a paid answer; a valid label is cached.
"""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from labelq import keyspace
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

    async def start(self, item: SessionItem) -> SessionLabelling:
        cached = await self.redis.get(self.cache_key(item.content_hash))
        hit = None
        if cached is not None:
            entry = orjson.loads(cached)
            hit = CachedLabel(entry["label"], entry["words"])
            await self.redis.hincrby(keyspace.ledger(self.settings, self.spec.name), keyspace.LEDGER_CACHE_HITS, 1)
        return SessionLabelling.start(self.spec, self.settings, item, hit)

    def price(self, completion: Completion, *, discount: float = 1.0) -> tuple[float, list[tuple[str, str, int]]]:
        """The answer's cost in dollars and the ledger increments that record it (not applied)."""
        cost = price_usd(self.settings, self.model, completion.input_tokens, completion.output_tokens,
                         discount=discount)
        return cost, call_increments(self.settings, task=self.spec.name, model=self.model,
                                     input_tokens=completion.input_tokens,
                                     output_tokens=completion.output_tokens, cost_usd=cost)

    async def charge(self, completion: Completion, *, discount: float = 1.0) -> float:
        """The answer's cost in dollars, now in the ledger."""
        cost, increments = self.price(completion, discount=discount)
        pipe = self.redis.pipeline(transaction=False)
        for key, name, n in increments:
            pipe.hincrby(key, name, n)
        await pipe.execute()
        return cost

    async def judge(self, state: SessionLabelling, completion: Completion, cost_usd: float) -> Answered:
        step = state.answered(completion, cost_usd)
        if isinstance(step, Labelled):
            await self.redis.set(self.cache_key(state.item.content_hash),
                                 orjson.dumps({"label": step.label, "words": step.words}),
                                 ex=self.settings.teacher_cache_ttl_s)
        return step
