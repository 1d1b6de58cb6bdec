"""Dedupe within a window: one set per task per bucket of time, each expiring whole.

A content hash enqueued at time ``t`` is claimed in the set of the bucket that
holds ``t`` (``seen:<task>:<first day>``; a bucket is six UTC days,
``dedupe_bucket_s``), and that set expires ``dedupe_window_days`` after its
bucket ends. So a claim is held for at least the window and at most one bucket
longer, a session enqueued again after that is new again, and Redis holds at
most window + one bucket of claims per task. A lookup costs one set per live
bucket (6, and the next one, for 30 days: about 1.5 ms of Redis per 1,024
hashes once all are full; day-long buckets would cost 31 sets, 9 ms, and hold
claims at most a day past the window instead of six). The audit reads each
live bucket's size and count (``seen_audit.lua``: one ``SCARD`` each and one
``MGET``), so the bucket count also sets what an audit costs.

A lookup (``seen_lookup.lua``; ``enqueue.lua`` in the enqueue's transaction)
checks every bucket that can still be live, the one after the current bucket
(written by a producer whose clock runs ahead: every claim takes its bucket from
its producer's clock, its expiry from the bucket alone), and the one set per
task that labelq kept before buckets (``seen_legacy``, read until it expires:
the first enqueue that finds it without a TTL gives it one window). Sets that do
not exist cost one ``EXISTS``.

Next to each set, ``seen:<task>:<bucket>:n`` counts what ``enqueue.lua`` added
to it, in the same transaction and with the same expiry: ``labelq audit``
compares the two bucket by bucket (:func:`claims_not_enqueued`, one read-only
script), so a bucket that expires takes both with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis

from labelq import keyspace, lua
from labelq.settings import Settings

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Bucket:
    set_key: str  # keyspace.seen
    count_key: str  # keyspace.seen_count
    expire_at_s: int  # unix time both expire


@dataclass(frozen=True, slots=True)
class DedupeKeys:
    """The keys one lookup or enqueue of ``task`` uses, at one moment."""

    current: Bucket  # where new claims go
    others: list[str]  # the other sets a lookup checks: older live buckets and the next one
    legacy: str  # keyspace.seen_legacy
    legacy_ttl_s: int  # the TTL the legacy set gets when it has none: one window

    @property
    def lookup(self) -> list[str]:
        """Every set a lookup checks, the current one first."""
        return [self.current.set_key, *self.others, self.legacy]


def window_s(settings: Settings) -> int:
    return max(1, round(settings.dedupe_window_days * DAY_S))


def bucket_name(start_s: int, bucket_s: int) -> str:
    """``2026-11-21`` for a bucket that starts at midnight UTC and lasts whole days, else ``2026-11-21T093000Z``."""
    fmt = "%Y-%m-%d" if bucket_s % DAY_S == 0 and start_s % DAY_S == 0 else "%Y-%m-%dT%H%M%SZ"
    return time.strftime(fmt, time.gmtime(start_s))


def _bucket(settings: Settings, task: str, index: int) -> Bucket:
    size = settings.dedupe_bucket_s
    name = bucket_name(index * size, size)
    return Bucket(keyspace.seen(settings, task, name), keyspace.seen_count(settings, task, name),
                  (index + 1) * size + window_s(settings))


def _indexes(settings: Settings, now_s: float) -> tuple[int, int]:
    """The oldest bucket that can still be live at ``now_s``, and the current one."""
    size = settings.dedupe_bucket_s
    return math.floor((now_s - window_s(settings)) / size), math.floor(now_s / size)


def dedupe_keys(settings: Settings, task: str, now_s: float | None = None) -> DedupeKeys:
    *older, current, following = live_buckets(settings, task, now_s)
    return DedupeKeys(current=current, others=[b.set_key for b in (*older, following)],
                      legacy=keyspace.seen_legacy(settings, task), legacy_ttl_s=window_s(settings))


def live_buckets(settings: Settings, task: str, now_s: float | None = None) -> list[Bucket]:
    """Every bucket of ``task`` that can hold claims at ``now_s``, oldest first (the next one included)."""
    now_s = time.time() if now_s is None else now_s
    oldest, current = _indexes(settings, now_s)
    return [_bucket(settings, task, i) for i in range(oldest, current + 2)]


def claims_not_enqueued(settings: Settings, client: redis.Redis, task: str, ingested: int) -> int:
    """Claims without their enqueue: per bucket, hashes in the set beyond the count ``enqueue.lua``
    kept; in the legacy set, hashes beyond the sessions ingested outside the live buckets.
    Read at one moment (``seen_audit.lua``), so a bucket expiring meanwhile takes its set and its count together."""
    keys = [key for bucket in live_buckets(settings, task) for key in (bucket.set_key, bucket.count_key)]
    replies = [int(n) for n in lua.script(client, "seen_audit")(keys=[*keys, keyspace.seen_legacy(settings, task)])]
    sizes, counts = replies[0:-1:2], replies[1:-1:2]
    orphans = sum(max(0, size - count) for size, count in zip(sizes, counts, strict=True))
    return orphans + max(0, replies[-1] - (ingested - sum(counts)))
