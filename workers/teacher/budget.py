"""A hard teacher budget per task and period, enforced atomically across all workers, that a lost
Redis cannot reopen.

**Redis decides.** Before each call a worker reserves the worst case (all input tokens, all
``max_tokens`` of output) in the totals of the current period (``labelq.budget``); after the call,
the reservation is replaced by the real cost. A call is refused when spent + reserved + worst
case would pass the cap, so concurrent workers never overspend. Reservations expire, so a worker
killed mid-call cannot hold budget forever; a Batch API batch reserves for the day it may run and
extends its reservation while it is polled. Lua scripts: ``budget_reserve``, ``budget_settle``,
``budget_seed``, ``budget_extend``.

**The store remembers.** Every writer (a worker process, or one Batch API job) owns one object per
period with its high-water mark H (``labelq.budget.SpendRecord``) and keeps, in memory, its
committed amount C: what it has spent plus the worst case of its calls in flight. The rule::

    C + X <= H already          C += X (in memory), then reserve X in Redis; refused: C -= X
    else: reserved X in Redis   C += X; if C > H: write H = C + block    (durably, before the call)
    Redis lost it meanwhile     C -= X, and reserve again
    settled at cost A           C += A - X; if C > H: write H = C        (the estimate undershot)
    end of a chunk              if H > C: write H = C                    (hand the block back)

so at every moment each writer's H covers every dollar it has sent or may be sending, and the
durable spend D, the sum of every writer's H, covers all money sent.

**The order of one call.** Reserve in Redis; raise C (and H, durably, when needed); check that
Redis still holds the reservation; only then send. A reservation that vanished meanwhile (a flush)
is given up and asked for again. Writing H after the reservation, not before, means a writer
raises H only for money Redis granted it (and its block): the first seed of a new period finds
nothing to count, and only a real loss of Redis costs anything. When H already covers the call
(the block has room: most calls), C is raised first, in memory, and the reservation itself is the
check: H covered the call before Redis granted it, so nothing is written, no thread is needed and
the rate-limit permit can be asked in the same atomic step (``reserve_and``). One new block is
taken at a time; the calls that waited for it fit in it.

**Seeding.** The reserve script refuses with -1 while the period's totals were never seeded (a
new period, or a flushed or lost Redis). The worker reads D from the store (its own exact C in
place of its own H) and seeds ``spent = max(Redis spent, D)`` (the first seed wins, later ones
change nothing), then reserves again.

**Why a flush never reopens spent money.** A call goes out only after its writer's H covered it
and, after that, Redis was seen still holding its reservation. Say Redis loses the totals at time
T. A call whose check came before T had H written before T; no reservation succeeds again until a
seed, and the seed reads D after T, so D counts that call. A call whose check comes after T finds
its reservation gone and is never sent on it. Calls reserved after the seed are counted by Redis on
top of it. So money sent <= seed + what Redis counted since <= cap. The price is paid only when
Redis is lost, and is bounded: at a flush, each live writer's unused block and the worst case of
the calls then in flight count as spent (such a call also counts again when it settles).

**Overhead.** A block is 1% of the cap (at least the call's worst case): a worker process writes
its record at most about 100 times per period for blocks, plus once per chunk to hand back what it
did not use (a $50 budget at $0.02 a call: one write per ~25 calls, and one per chunk); a call that
takes a new block adds one Redis round trip (the check), the others none. A Batch API job writes
exactly, without a block, once per batch it submits and once per batch it settles.

**Per chunk and per process.** The writer (``process_writer``) lives as long as its worker process;
a ``Budget`` may serve many chunks. ``close`` ends a stretch of work, not the object: it hands the
unused block back (H = C; C still counts any call in flight, so nothing in flight is given back),
and the next reservation takes a new block. The teacher closes it at the end of every chunk, when
none of the chunk's calls is in flight, so a worker killed between chunks leaves no block behind.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from labelq import keyspace, lua
from labelq.budget import (
    TOTAL,
    SpendRecord,
    keys_expire_at_ms,
    period_id,
    read_spend_record,
    seed_floor_micro,
)
from labelq.errors import ObjectNotFound, ServiceUnavailable
from labelq.keyspace import BudgetField
from labelq.ledger import MICRO, to_micro
from labelq.logging import get_logger
from labelq.settings import Settings
from labelq.store import ObjectStore

log = get_logger(__name__)

RESERVATION_TTL_MS = 10 * 60_000
BLOCK_SHARE = 0.01  # a worker's durable block: 1% of the cap
SEED_TRIES = 3


@dataclass(frozen=True)
class Reservation:
    id: str
    micro_usd: int
    period_id: str  # settled into the period it was reserved in, even after midnight


class SpendWriter:
    """One writer's durable spend record, per period: the high-water mark H and the committed C.

    Thread-safe; its methods do blocking store I/O, so async code calls them in a thread.
    """

    def __init__(self, store: ObjectStore, task: str, writer_id: str, *, block_micro: int) -> None:
        self.store, self.task, self.writer_id, self.block_micro = store, task, writer_id, block_micro
        self._lock = threading.Lock()
        self._committed: dict[str, int] = {}
        self._high: dict[str, int] = {}

    def try_adjust(self, pid: str, delta_micro: int) -> bool:
        """Add ``delta_micro`` to C at once, in memory, when H already covers the result: no write
        is needed, so nothing blocks (the event loop may call it). False, changing nothing, when a
        write would be needed, the period is not loaded yet, or another thread holds the writer:
        then use ``commit``, ``release`` or ``settle`` in a thread."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            committed = self._committed.get(pid)
            if committed is None or committed + delta_micro > self._high[pid]:
                return False
            self._committed[pid] = committed + delta_micro
            return True
        finally:
            self._lock.release()

    def commit(self, pid: str, micro: int) -> None:
        """Count ``micro`` as committed; H is raised durably first when it would not cover it."""
        with self._lock:
            committed = self._loaded(pid) + micro
            if committed > self._high[pid]:
                self._write(pid, committed + self.block_micro)
            self._committed[pid] = committed

    def release(self, pid: str, micro: int) -> None:
        """A commitment that was not used (the reservation was refused)."""
        with self._lock:
            self._committed[pid] = self._loaded(pid) - micro

    def settle(self, pid: str, reserved_micro: int, actual_micro: int) -> None:
        with self._lock:
            committed = self._loaded(pid) + actual_micro - reserved_micro
            if committed > self._high[pid]:  # the call cost more than its worst-case estimate
                self._write(pid, committed)
            self._committed[pid] = committed

    def restate(self, pid: str, committed_micro: int) -> None:
        """Set C from the writer's own books (a resumed Batch API job), and H to match."""
        with self._lock:
            self._loaded(pid)
            self._committed[pid] = committed_micro
            if self._high[pid] != committed_micro:
                self._write(pid, committed_micro)

    def trim(self) -> None:
        """Lower H to C where a block was left unused (nothing in flight is given back)."""
        with self._lock:
            for pid, high in list(self._high.items()):
                if high > self._committed[pid]:
                    self._write(pid, self._committed[pid])

    def committed_micro(self, pid: str) -> int:
        with self._lock:
            return self._loaded(pid)

    def _loaded(self, pid: str) -> int:
        """C of a period, reading H back the first time (a resumed writer's record counts as committed)."""
        if pid not in self._high:
            try:
                high = read_spend_record(self.store, keyspace.budget_spend(self.task, pid, self.writer_id)
                                         ).high_water_micro
            except ObjectNotFound:
                high = 0
            self._high[pid] = self._committed[pid] = high
        return self._committed[pid]

    def _write(self, pid: str, high: int) -> None:
        record = SpendRecord(task=self.task, period=pid, writer=self.writer_id, high_water_micro=high)
        self.store.put_bytes(keyspace.budget_spend(self.task, pid, self.writer_id),
                             record.model_dump_json().encode())
        self._high[pid] = high


_PROCESS_WRITERS: dict[tuple[int, str, str], SpendWriter] = {}
_PROCESS_LOCK = threading.Lock()


def process_writer(store: ObjectStore, task: str, limit_usd: float) -> SpendWriter:
    """This process's writer for ``task``: a worker labels chunk after chunk under one record a period.

    Keyed by process id, so a forked pool child never shares its parent's record.
    """
    key = (os.getpid(), store.url, task)
    with _PROCESS_LOCK:
        writer = _PROCESS_WRITERS.get(key)
        if writer is None:
            writer_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            writer = _PROCESS_WRITERS[key] = SpendWriter(
                store, task, writer_id, block_micro=int(to_micro(limit_usd) * BLOCK_SHARE))
        return writer


class Budget:
    """The spend cap of one task spec in the current period (see the module docstring)."""

    def __init__(self, client: aioredis.Redis, settings: Settings, task: str, limit_usd: float,
                 writer: SpendWriter, *, clock: Callable[[], datetime] | None = None) -> None:
        self.settings, self.task, self.writer = settings, task, writer
        self._clock = clock or (lambda: datetime.now(UTC))  # tests move it across midnight
        self.limit_micro = to_micro(limit_usd)
        self._client = client
        self._reserve = lua.script(client, "budget_reserve")
        self._settle = lua.script(client, "budget_settle")
        self._seed = lua.script(client, "budget_seed")
        self._extend = lua.script(client, "budget_extend")
        self._new_block = asyncio.Lock()

    def keys(self, pid: str) -> list[str]:
        return keyspace.budget_keys(self.settings, self.task, pid)

    async def reserve(self, worst_usd: float, *, ttl_ms: int = RESERVATION_TTL_MS) -> Reservation | None:
        """A reservation, or None when the call would pass the cap (then do not call).

        Redis first, then the durable record, then a check that Redis still holds the reservation:
        a call goes out only once its money is both reserved and written down. When the writer's
        H already covers the call, Redis granting it is the check (one round trip, nothing written).
        """
        reservation, _ = await self.reserve_and(worst_usd, None, ttl_ms=ttl_ms)
        return reservation

    async def reserve_and(self, worst_usd: float, then: lua.Call | None, *,
                          ttl_ms: int = RESERVATION_TTL_MS) -> tuple[Reservation | None, Any]:
        """``reserve``, and the script call ``then`` in the same round trip once the reservation is
        granted, where that is safe (H already covered the call); its reply, or None when ``then``
        was not run (the caller runs it)."""
        pid = period_id(self.settings.teacher_budget_period, self._clock())
        micro = max(1, to_micro(worst_usd))
        if not self.writer.try_adjust(pid, micro):
            async with self._new_block:  # one new block at a time: the calls that wait for it fit in it
                if not self.writer.try_adjust(pid, micro):
                    return await self._reserve_and_write(pid, micro, ttl_ms), None
        # H already covers the call (the block has room): Redis granting it is the check.
        reservation = Reservation(uuid.uuid4().hex, micro, pid)
        try:
            granted, reply = await self._try_reserve(reservation, ttl_ms, then)
        except BaseException:
            await self._adjust(pid, -micro, self.writer.release, pid, micro)
            raise
        if granted:
            return reservation, reply
        await self._adjust(pid, -micro, self.writer.release, pid, micro)
        return None, None

    async def _reserve_and_write(self, pid: str, micro: int, ttl_ms: int) -> Reservation | None:
        """Reserve in Redis, raise H durably, then check that Redis still holds the reservation."""
        for _ in range(SEED_TRIES):
            reservation = Reservation(uuid.uuid4().hex, micro, pid)
            if not (await self._try_reserve(reservation, ttl_ms, None))[0]:
                return None
            try:
                await asyncio.to_thread(self.writer.commit, pid, micro)
            except BaseException:
                await self._settle(keys=self.keys(pid), args=[reservation.id, 0, keys_expire_at_ms(pid)])
                raise
            if await self._client.hexists(self.keys(pid)[2], reservation.id):
                return reservation
            # Redis lost the reservation while the record was written (a flush): it was never
            # counted by the seed that followed, so it must not be used. Ask again.
            await asyncio.to_thread(self.writer.release, pid, micro)
        raise ServiceUnavailable(f"the teacher budget of {self.task} ({pid}) vanished from Redis {SEED_TRIES} "
                                 "times in a row; is something flushing Redis?")

    async def _try_reserve(self, reservation: Reservation, ttl_ms: int, then: lua.Call | None) -> tuple[bool, Any]:
        """Granted or not (seeding the period's totals when Redis has none), and ``then``'s reply."""
        pid = reservation.period_id
        args: list[str | int] = [reservation.id, reservation.micro_usd, self.limit_micro, ttl_ms,
                                 keys_expire_at_ms(pid)]
        for _ in range(SEED_TRIES):
            reply = None
            if then is None:
                answer = int(await self._reserve(keys=self.keys(pid), args=args))
            else:
                answer, *rest = await lua.chain(self._client, "budget_reserve", then.name)(
                    lua.Call("budget_reserve", self.keys(pid), args), then)
                reply = rest[0] if rest else None
            if answer >= 0:
                return answer == 1, reply
            await self.seed(pid)
        raise ServiceUnavailable(f"the teacher budget of {self.task} ({pid}) vanished from Redis {SEED_TRIES} "
                                 "times in a row while being seeded; is something flushing Redis?")

    async def seed(self, pid: str) -> None:
        """Start the period's totals from the larger of Redis and the durable record (once).

        This writer counts its exact committed amount (its record may also hold an unused block);
        other writers count their high-water marks.
        """
        legacy = await self._client.hget(keyspace.budget_legacy(self.settings, self.task), BudgetField.SPENT) \
            if pid == TOTAL else None
        own = (self.writer.writer_id, await asyncio.to_thread(self.writer.committed_micro, pid))
        floor = await asyncio.to_thread(seed_floor_micro, self.writer.store, self.task, pid, int(legacy or 0), own)
        if await self._seed(keys=self.keys(pid)[:1], args=[floor, keys_expire_at_ms(pid)]):
            log.info("teacher_budget_seeded", task=self.task, period=pid, durable_usd=floor / MICRO)

    async def settle(self, reservation: Reservation, actual_usd: float, *, pipe: Pipeline | None = None) -> None:
        """Replace the reservation by the real cost. With ``pipe`` the Redis step is queued on it
        (the caller executes it; the durable step is done here, after it is queued)."""
        args = self._settle_args(reservation, actual_usd)
        if pipe is None:
            await self._settle(keys=self.keys(reservation.period_id), args=args)
        else:
            await self._settle(keys=self.keys(reservation.period_id), args=args, client=pipe)
        await self.settled(reservation, actual_usd)

    def settle_in(self, batch: lua.Batch, reservation: Reservation, actual_usd: float) -> None:
        """Queue the Redis step of ``settle`` on ``batch``; call ``settled`` once the batch has run."""
        batch.script("budget_settle", self.keys(reservation.period_id), self._settle_args(reservation, actual_usd))

    async def settled(self, reservation: Reservation, actual_usd: float) -> None:
        """The durable step of ``settle``: C moves from the worst case to the real cost."""
        pid, reserved = reservation.period_id, reservation.micro_usd
        actual = to_micro(actual_usd)
        await self._adjust(pid, actual - reserved, self.writer.settle, pid, reserved, actual)

    def _settle_args(self, reservation: Reservation, actual_usd: float) -> list[str | int]:
        return [reservation.id, to_micro(actual_usd), keys_expire_at_ms(reservation.period_id)]

    async def _adjust(self, pid: str, delta_micro: int, slow: Callable[..., None], *args: object) -> None:
        """Move C by ``delta_micro`` in memory when no write is needed, else ``slow(*args)`` in a thread."""
        if not self.writer.try_adjust(pid, delta_micro):
            await asyncio.to_thread(slow, *args)

    async def extend(self, reservation: Reservation, ttl_ms: int) -> bool:
        """Keep a live reservation for ``ttl_ms`` from now; False when it is gone."""
        return bool(await self._extend(keys=self.keys(reservation.period_id), args=[reservation.id, ttl_ms]))

    async def close(self) -> None:
        """Hand back the writer's unused block (end of a chunk); the budget can reserve again after."""
        await asyncio.to_thread(self.writer.trim)
