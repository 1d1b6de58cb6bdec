"""A hard teacher budget per task, enforced atomically across all workers.

Before each call a worker reserves the worst case (all input tokens, all
``max_tokens`` of output); after it, the reservation is replaced by the real
cost. A call is refused when spent + reserved + worst case would pass the cap,
so concurrent workers can never overspend. Reservations expire, so a worker
killed mid-call cannot hold budget forever. Both steps are Lua scripts
(``labelq/lua/budget_reserve.lua``, ``budget_settle.lua``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from labelq import lua
from labelq.ledger import to_micro

RESERVATION_TTL_MS = 10 * 60_000


@dataclass(frozen=True)
class Reservation:
    id: str
    micro_usd: int


class Budget:
    """The spend cap of one task spec."""

    def __init__(self, client: aioredis.Redis, keys: list[str], limit_usd: float) -> None:
        self._keys = keys  # keyspace.budget_keys
        self.limit_micro = to_micro(limit_usd)
        self._reserve = lua.script(client, "budget_reserve")
        self._settle = lua.script(client, "budget_settle")

    async def reserve(self, worst_usd: float) -> Reservation | None:
        """A reservation, or None when the call would pass the cap (then do not call)."""
        reservation = Reservation(uuid.uuid4().hex, max(1, to_micro(worst_usd)))
        ok = await self._reserve(keys=self._keys, args=[
            reservation.id, reservation.micro_usd, self.limit_micro, RESERVATION_TTL_MS])
        return reservation if ok else None

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        await self._settle(keys=self._keys, args=[reservation.id, to_micro(actual_usd)])

