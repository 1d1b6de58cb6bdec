"""Dedupe within a window (``labelq.dedupe``): one set per task per bucket of time, each expiring whole,
looked up bucket by bucket, with the one set per task of labelq before buckets read until it expires."""

from __future__ import annotations

import calendar
import time
import uuid

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.dedupe import DAY_S, dedupe_keys, live_buckets
from labelq.hashing import chunk_id
from labelq.keyspace import Stat
from labelq.queue.app import create_app
from labelq.queue.publish import ChunkPublisher, OutgoingChunk
from labelq.schemas import chunk_json
from labelq.settings import Settings
from tests.support.helpers import wait_until

pytestmark = pytest.mark.integration

TASK = "session-label"


def _chunk(hashes: list[str]) -> OutgoingChunk:
    body = chunk_json(TASK, "seed", [(f"s{i}", h, orjson.dumps({"session_id": f"s{i}"})) for i, h in enumerate(hashes)])
    return OutgoingChunk(chunk_id(TASK, hashes), TASK, len(hashes), body)


def test_the_buckets_a_lookup_checks_and_when_a_claim_expires(settings: Settings) -> None:
    now = calendar.timegm((2026, 11, 21, 15, 0, 0))
    default = dedupe_keys(settings, "t", now)  # a 30-day window of six-day buckets, named by their first day
    assert default.current.set_key == keyspace.seen(settings, "t", "2026-11-21")  # day 20,778 = 6 x 3,463
    assert default.current.expire_at_s == calendar.timegm((2026, 12, 27, 0, 0, 0))  # its end + 30 days
    assert len(default.others) == 6 and default.others[0].endswith(":2026-10-22")  # ends 10-28: live
    keys = dedupe_keys(settings.model_copy(update={"dedupe_bucket_s": DAY_S}), "t", now)  # day-long buckets
    assert keys.current.set_key == keyspace.seen(settings, "t", "2026-11-21")
    assert keys.current.count_key == keyspace.seen_count(settings, "t", "2026-11-21")
    assert keys.current.expire_at_s == calendar.timegm((2026, 12, 22, 0, 0, 0))  # the day's end + 30 days
    # Claims of 2026-10-22 are held until 2026-11-22 00:00; those of 2026-10-21 expired at midnight.
    days = [k.rsplit(":", 1)[1] for k in keys.others]
    assert days[0] == "2026-10-22" and days[-2] == "2026-11-20" and days[-1] == "2026-11-22" and len(days) == 31
    assert keys.lookup == [keys.current.set_key, *keys.others, keyspace.seen_legacy(settings, "t")]
    short = settings.model_copy(update={"dedupe_bucket_s": 600, "dedupe_window_days": 1})
    assert dedupe_keys(short, "t", now).current.set_key == keyspace.seen(settings, "t", "2026-11-21T150000Z")


def test_a_lookup_finds_every_live_bucket_and_the_legacy_set(settings: Settings, redis_client: redis.Redis) -> None:
    hashes = [uuid.uuid4().hex for _ in range(5)]
    raw = [bytes.fromhex(h) for h in hashes]
    t = time.time()
    redis_client.sadd(dedupe_keys(settings, TASK, t - 29 * DAY_S).current.set_key, raw[0])  # still in the window
    # 37 days ago: past the window and its last bucket (claims are held 30 to 36 days), so expired by now
    redis_client.sadd(dedupe_keys(settings, TASK, t - 37 * DAY_S).current.set_key, raw[1])
    redis_client.sadd(keyspace.seen_legacy(settings, TASK), raw[2])  # labelq before buckets
    redis_client.sadd(dedupe_keys(settings, TASK, t + settings.dedupe_bucket_s).current.set_key, raw[3])  # one ahead
    with ChunkPublisher(settings, create_app(settings), redis_client) as publisher:
        assert publisher.unseen(TASK, hashes) == [False, True, False, False, True]
        assert redis_client.ttl(keyspace.seen_legacy(settings, TASK)) == -1
        fresh = [uuid.uuid4().hex for _ in range(3)]
        assert publisher.enqueue(TASK, [("teacher", _chunk(fresh))], fresh) == set()
    current = dedupe_keys(settings, TASK).current
    # The legacy set now expires one window from now; the bucket's set and count when the bucket does.
    assert 29 * DAY_S < redis_client.ttl(keyspace.seen_legacy(settings, TASK)) <= 30 * DAY_S
    for key in (current.set_key, current.count_key):
        assert abs(redis_client.ttl(key) - (current.expire_at_s - time.time())) <= 2
    assert redis_client.get(current.count_key) == b"3" and redis_client.scard(current.set_key) == 3


def test_a_claim_is_a_duplicate_within_the_window_and_new_after_it(
        settings: Settings, redis_client: redis.Redis) -> None:
    """A 2-second window of 1-second buckets: the sets really expire, taking their counts with them."""
    settings = settings.model_copy(update={"dedupe_window_days": 2 / DAY_S, "dedupe_bucket_s": 1})
    hashes = [uuid.uuid4().hex for _ in range(4)]
    with ChunkPublisher(settings, create_app(settings), redis_client) as publisher:
        assert publisher.enqueue(TASK, [("teacher", _chunk(hashes))], hashes) == set()
        written = [k for b in live_buckets(settings, TASK) for k in (b.set_key, b.count_key)]
        assert publisher.unseen(TASK, hashes) == [False] * 4
        assert publisher.enqueue(TASK, [("teacher", _chunk(hashes))], hashes) == set(hashes)  # within the window
        assert redis_client.exists(*written) == 2
        wait_until(lambda: not redis_client.exists(*written), 10,
                   "the window's buckets to expire")
        assert publisher.unseen(TASK, hashes) == [True] * 4
        assert publisher.enqueue(TASK, [("teacher", _chunk(hashes))], hashes) == set()  # new again
    assert redis_client.hget(keyspace.stats(settings, TASK), Stat.INGESTED) == b"8"
