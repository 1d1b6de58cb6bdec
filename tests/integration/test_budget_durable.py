"""The teacher budget against a real Redis and a real store: periods, and a Redis that loses the
budget (its keys deleted, as a flush does) never reopens money already spent."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from labelq import keyspace
from labelq.budget import budget_state, durable_spent_micro
from labelq.keyspace import BudgetField
from labelq.ledger import MICRO
from labelq.settings import Settings
from labelq.status import gather
from labelq.store import ObjectStore, open_store
from tests.support.cli import labelq
from workers.teacher.budget import Budget, SpendWriter

pytestmark = pytest.mark.integration
TASK = "session-label"


def forget_everything(client: redis.Redis, settings: Settings) -> int:
    """What FLUSHALL does to this test's keys (the Redis server is shared with other tests)."""
    keys = list(client.scan_iter(match=settings.redis_key_prefix + "*", count=1000))
    return int(client.delete(*keys)) if keys else 0


def writer(store: ObjectStore, name: str, limit_usd: float) -> SpendWriter:
    return SpendWriter(store, TASK, name, block_micro=int(limit_usd * MICRO * 0.01))


async def spend(budget: Budget, worst_usd: float, actual_usd: float) -> float:
    """One call as the teacher makes it: reserve, 'call', settle; what it cost (0 when refused)."""
    reservation = await budget.reserve(worst_usd)
    if reservation is None:
        return 0.0
    await asyncio.sleep(0)
    await budget.settle(reservation, actual_usd)
    return actual_usd


def test_a_lost_budget_resumes_from_the_store_and_refuses_spent_money(
        settings: Settings, redis_client: redis.Redis, redis_url: str) -> None:
    store = open_store(settings)

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        workers = [Budget(client, settings, TASK, 1.0, writer(store, f"w{i}", 1.0)) for i in range(2)]
        for i in range(12):
            assert await spend(workers[i % 2], 0.08, 0.05) == 0.05  # $0.60 spent by two writers
        for w in workers:
            await w.close()
        assert forget_everything(redis_client, settings) > 0
        # The durable record: each writer's own object, summed; exact once blocks are handed back.
        assert durable_spent_micro(store, TASK, "total") == 600_000
        assert len(list(store.list(keyspace.budget_spend_prefix(TASK, "total")))) == 2
        # Status reads the store while Redis has no totals (and says so).
        lost = budget_state(redis_client, settings, TASK, store)
        assert lost.from_store and lost.spent_usd == pytest.approx(0.6)
        newcomer = Budget(client, settings, TASK, 1.0, writer(store, "w-new", 1.0))
        assert await newcomer.reserve(0.5) is None  # $0.60 + $0.50 would pass $1: refused, flush or not
        assert await spend(newcomer, 0.3, 0.3) == 0.3
        assert await newcomer.reserve(0.2) is None
        await newcomer.close()
        await client.aclose()

    asyncio.run(scenario())
    state = budget_state(redis_client, settings, TASK, store)
    assert not state.from_store and state.spent_usd == pytest.approx(0.9)
    assert durable_spent_micro(store, TASK, "total") == 900_000


def test_racing_writers_and_repeated_flushes_never_spend_past_the_cap(
        settings: Settings, redis_client: redis.Redis, redis_url: str) -> None:
    """Six writers (worker processes) with calls in flight while Redis loses the budget again and
    again: the money the calls cost, counted here as a provider would, stays under the cap."""
    store, limit = open_store(settings), 0.5
    rng = random.Random(7)
    paid: list[float] = []

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        budgets = [Budget(client, settings, TASK, limit, writer(store, f"p{i}", limit)) for i in range(6)]

        async def worker(budget: Budget) -> None:
            for _ in range(60):
                worst = rng.uniform(0.002, 0.01)
                reservation = await budget.reserve(worst)
                if reservation is None:
                    await asyncio.sleep(0.001)
                    continue
                await asyncio.sleep(rng.uniform(0, 0.003))  # the call is in flight
                actual = worst * rng.uniform(0.3, 1.0)
                paid.append(actual)
                await budget.settle(reservation, actual)

        async def flusher() -> None:
            for _ in range(5):
                await asyncio.sleep(0.03)
                forget_everything(redis_client, settings)

        await asyncio.gather(flusher(), *(worker(b) for b in budgets))
        await client.aclose()

    asyncio.run(scenario())
    assert sum(paid) <= limit
    assert sum(paid) > 0.5 * limit  # the test spent for real; without the store it passes the cap
    assert durable_spent_micro(store, TASK, "total") / MICRO >= sum(paid) - 1e-6


def test_a_call_in_flight_during_the_flush_is_counted(settings: Settings, redis_client: redis.Redis,
                                                       redis_url: str) -> None:
    store = open_store(settings)

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        slow = Budget(client, settings, TASK, 1.0, writer(store, "slow", 1.0))
        other = Budget(client, settings, TASK, 1.0, writer(store, "other", 1.0))
        in_flight = await slow.reserve(0.6)  # sent; the answer is not back yet
        assert in_flight is not None
        forget_everything(redis_client, settings)
        assert await other.reserve(0.5) is None  # the store holds the $0.60 in flight
        await slow.settle(in_flight, 0.55)
        assert await other.reserve(0.3) is None  # counted in the seed and again at its settle: never less
        await client.aclose()

    asyncio.run(scenario())


def test_a_day_period_resets_at_midnight_utc_and_status_says_when(
        settings: Settings, redis_client: redis.Redis, redis_url: str) -> None:
    settings = settings.model_copy(update={"teacher_budget_period": "day"})
    store = open_store(settings)
    # Late today, not a fixed date: a past day's keys would expire at once (a week after it ended).
    today = datetime.now(UTC).replace(hour=23, minute=59, second=0, microsecond=0)
    day, next_day = today.strftime("%Y-%m-%d"), (today + timedelta(days=1)).strftime("%Y-%m-%d")
    now = [today]

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        budget = Budget(client, settings, TASK, 0.1, writer(store, "w", 0.1), clock=lambda: now[0])
        assert await spend(budget, 0.06, 0.06) == 0.06
        assert await budget.reserve(0.06) is None  # spent for the 21st
        now[0] += timedelta(minutes=2)
        assert await spend(budget, 0.06, 0.06) == 0.06  # the 22nd has its own budget
        await budget.close()
        await client.aclose()

    asyncio.run(scenario())
    assert redis_client.hget(keyspace.budget_keys(settings, TASK, day)[0], BudgetField.SPENT) == b"60000"
    ttl_ms = redis_client.pttl(keyspace.budget_keys(settings, TASK, next_day)[0])
    assert 7 * 86_400_000 < ttl_ms <= 9 * 86_400_000  # a day's keys go a week after the day ends
    assert durable_spent_micro(store, TASK, day) == durable_spent_micro(store, TASK, next_day) == 60_000
    redis_client.hset(keyspace.stats(settings, TASK), "ingested", 1)  # status lists tasks it has counted
    status = gather(settings, redis_client, store).tasks[TASK].teacher  # the real clock: today
    assert status.budget_period == "day" and status.budget_period_id == day
    assert status.budget_resets_at == f"{next_day}T00:00:00+00:00"
    assert status.budget_spent_usd == pytest.approx(0.06)
    assert status.budget_remaining_usd == pytest.approx(50.0 - 0.06)  # the spec's budget: the default $50


def test_the_budget_of_before_periods_is_not_reopened(settings: Settings, redis_client: redis.Redis,
                                                      redis_url: str) -> None:
    redis_client.hset(keyspace.budget_legacy(settings, TASK), BudgetField.SPENT, 900_000)  # $0.90 spent

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        budget = Budget(client, settings, TASK, 1.0, writer(open_store(settings), "w", 1.0))
        assert await budget.reserve(0.2) is None
        assert await budget.reserve(0.05) is not None
        await client.aclose()

    asyncio.run(scenario())


def test_status_shows_the_period_what_remains_and_when_it_resets(
        settings: Settings, redis_client: redis.Redis, redis_url: str) -> None:
    settings = settings.model_copy(update={"teacher_budget_period": "month"})
    store = open_store(settings)

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        budget = Budget(client, settings, TASK, 50.0, writer(store, "w", 50.0))
        assert await spend(budget, 2.0, 1.25) == 1.25
        await budget.close()
        await client.aclose()

    asyncio.run(scenario())
    redis_client.hset(keyspace.stats(settings, TASK), "ingested", 1)
    now = datetime.now(UTC)
    month = now.strftime("%Y-%m")
    resets = datetime(now.year + now.month // 12, now.month % 12 + 1, 1).strftime("%Y-%m-%d 00:00")
    env = {"LABELQ_TEACHER_BUDGET_PERIOD": "month", "COLUMNS": "200"}
    expected = f"budget: $48.75 of $50.00 left this month ({month}), resets {resets} UTC"
    shown = labelq(["status"], settings, env=env)
    assert shown.returncode == 0, shown.stderr
    assert expected in shown.stdout.decode()
    forget_everything(redis_client, settings)  # Redis lost it: status shows what the store says
    redis_client.hset(keyspace.stats(settings, TASK), "ingested", 1)
    assert expected in labelq(["status"], settings, env=env).stdout.decode()
    snapshot = orjson.loads(labelq(["status", "--json"], settings, env=env).stdout.splitlines()[-1])
    assert snapshot["tasks"][TASK]["teacher"]["budget_remaining_usd"] == 48.75


def test_a_reservation_lost_while_its_record_is_written_is_never_used(
        settings: Settings, redis_client: redis.Redis, redis_url: str) -> None:
    """Redis flushed between granting a reservation and the durable write: the seed that follows did
    not count it, so the call must not go out on it; the budget asks again (and the seed counts it)."""
    store = open_store(settings)

    class FlushedDuringTheWrite(SpendWriter):
        flushes = 1

        def commit(self, pid: str, micro: int) -> None:
            super().commit(pid, micro)
            if self.flushes:
                self.flushes -= 1
                forget_everything(redis_client, settings)

    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        budget = Budget(client, settings, TASK, 1.0, FlushedDuringTheWrite(store, TASK, "w", block_micro=0))
        reservation = await budget.reserve(0.4)
        assert reservation is not None
        amounts = keyspace.budget_keys(settings, TASK, "total")[2]
        assert await client.hexists(amounts, reservation.id)  # the one Redis holds, not the lost one
        assert budget.writer.committed_micro("total") == 400_000  # the lost one was given back
        await budget.settle(reservation, 0.4)
        await client.aclose()

    asyncio.run(scenario())
    assert budget_state(redis_client, settings, TASK).spent_usd == pytest.approx(0.4)
