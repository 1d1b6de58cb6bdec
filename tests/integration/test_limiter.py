"""The global limiter's token rule, against a real redis-server (a 1 s window for speed)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from labelq import keyspace
from labelq.errors import RateLimited
from labelq.settings import Settings
from workers.teacher.limiter import RateLimiter

pytestmark = pytest.mark.integration


def keys(settings: Settings, name: str) -> list[str]:
    """The limiter's keys under a prefix of their own (each limiter here has its own limits)."""
    return keyspace.rate_limit_keys(settings.model_copy(update={"redis_key_prefix": f"{settings.redis_key_prefix}{name}:"}))


def test_tokens_per_window_block_settle_and_never_deadlock(redis_url: str, settings: Settings) -> None:
    """A deadline of now: the limiter grants only what fits at once, and says so otherwise."""
    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        limiter = RateLimiter(client, keys(settings, "lim1"), rpm=1000, tpm=1000, window_ms=1000, burst=1000)
        far = time.monotonic() + 30
        first = await limiter.acquire(400, deadline=far)
        second = await limiter.acquire(400, deadline=far)
        with pytest.raises(RateLimited):  # no room before the deadline: say so, do not wait
            await limiter.acquire(400, deadline=time.monotonic())
        await limiter.settle(first, 100)  # the first call used 100 tokens, not 400
        await limiter.acquire(450, deadline=time.monotonic())  # 100 + 400 + 450 <= 1000: fits at once
        with pytest.raises(RateLimited) as refused:  # 950 + 400 > 1000: wait for the window to move on
            await limiter.acquire(400, deadline=time.monotonic())
        # At most the window, plus the script's 1 ms margin (``second`` may be granted in this same ms).
        assert 0 < refused.value.retry_after_s <= 1.001
        # Room for 400 comes when ``second`` leaves the window (``first`` alone frees only 100).
        fourth = await limiter.acquire(400, deadline=far)
        assert fourth.granted_at_ms >= second.granted_at_ms + 1000
        huge = RateLimiter(client, keys(settings, "lim2"), rpm=1000, tpm=1000, window_ms=1000)
        await huge.acquire(5000, deadline=far)  # larger than the limit: allowed alone, not stuck
        await client.aclose()

    asyncio.run(scenario())


def test_a_whole_window_is_granted_at_once_and_not_one_request_more(redis_url: str, settings: Settings) -> None:
    """The limit is usable in full: with a burst as large as the limit, all of it goes without waiting."""
    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        limiter = RateLimiter(client, keys(settings, "lim4"), rpm=10, tpm=10**9, window_ms=60_000, burst=10)
        granted = [await limiter.acquire(1, deadline=time.monotonic()) for _ in range(10)]
        with pytest.raises(RateLimited):
            await limiter.acquire(1, deadline=time.monotonic())
        assert len({p.id for p in granted}) == 10
        await client.aclose()

    asyncio.run(scenario())


def test_requests_per_window_with_pacing(redis_url: str, settings: Settings) -> None:
    async def scenario() -> list[float]:
        client = aioredis.from_url(redis_url)
        limiter = RateLimiter(client, keys(settings, "lim3"), rpm=20, tpm=10**9, window_ms=1000, burst=2)
        far = time.monotonic() + 30
        granted = []
        for _ in range(30):
            granted.append((await limiter.acquire(1, deadline=far)).granted_at_ms / 1000)
        await client.aclose()
        return granted

    granted = asyncio.run(scenario())
    worst = max(sum(1 for t in granted[i:] if t < start + 1.0) for i, start in enumerate(granted))
    assert worst <= 20
    # Paced, not bunched: any quarter second holds its share (5) plus the burst allowance (2).
    busiest = max(sum(1 for t in granted[i:] if t < start + 0.25) for i, start in enumerate(granted))
    assert busiest <= 5 + 2
