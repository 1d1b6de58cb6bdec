"""A hard teacher budget per task, enforced atomically across all workers.

Before each call a worker reserves the worst case (all input tokens, all
``max_tokens`` of output); after it, the reservation is replaced by the real
cost. A call is refused when spent + reserved + worst case would pass the cap,
so concurrent workers can never overspend. Reservations expire, so a worker
killed mid-call cannot hold budget forever.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from labelq.ledger import budget_keys, to_micro

RESERVATION_TTL_MS = 10 * 60_000

_RESERVE = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local amount = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  redis.call('HINCRBY', KEYS[1], 'reserved', -amount)
  redis.call('HDEL', KEYS[3], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local amount, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if spent + reserved + amount > limit then return 0 end
redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], amount)
return 1
"""

_SETTLE = """
local amount = redis.call('HGET', KEYS[3], ARGV[1])
if amount then
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(amount))
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[2]))
"""


@dataclass(frozen=True)
class Reservation:
    id: str
    micro_usd: int


class Budget:
    """The spend cap of one task spec."""

    def __init__(self, client: aioredis.Redis, prefix: str, task: str, limit_usd: float) -> None:
        self._keys = budget_keys(prefix, task)
        self.limit_micro = to_micro(limit_usd)
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    async def reserve(self, worst_usd: float) -> Reservation | None:
        """A reservation, or None when the call would pass the cap (then do not call)."""
        reservation = Reservation(uuid.uuid4().hex, max(1, to_micro(worst_usd)))
        ok = await self._reserve(keys=self._keys, args=[
            reservation.id, reservation.micro_usd, self.limit_micro, RESERVATION_TTL_MS])
        return reservation if ok else None

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        await self._settle(keys=self._keys, args=[reservation.id, to_micro(actual_usd)])

