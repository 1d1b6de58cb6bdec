"""200 sessions crafted to land in the teacher's 2% sample, through the real producer and Redis:
the keyed sample takes them at the configured rate (within 3 sigma), not all of them."""

from __future__ import annotations

import math
import time
from collections import Counter
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import redis

from labelq import keyspace
from labelq.hashing import content_hash
from labelq.settings import Settings
from labelq.store import open_store
from producer.run import run_ingest
from tests.support.chaos import record_result
from tests.support.helpers import queued_chunks, write_jsonl

pytestmark = [pytest.mark.chaos]
N = 200
RATE = 0.02
# A deployment's key, made on an earlier run (fixed here so the count is the same on every run).
DEPLOYMENT_KEY = bytes(range(7, 39))


def unkeyed_fraction(digest: str) -> float:
    """The sample test before keying (what a submitter can compute): the content hash's first 32 bits."""
    return int(digest[:8], 16) / 2**32


def crafted_sessions(n: int, rate: float) -> tuple[list[dict[str, Any]], int]:
    """``n`` sessions, each with a spare field ground until the unkeyed test samples it; and the tries spent."""
    sessions, tries = [], 0
    for i in range(n):
        for nonce in count():
            tries += 1
            session = {"session_id": f"crafted-{i}", "utm_campaign": f"spring-{nonce:x}",
                       "events": [{"type": "search", "query": "running shoes"}, {"type": "click", "target": "#buy"}]}
            if unkeyed_fraction(content_hash(session)) < rate:
                sessions.append(session)
                break
    return sessions, tries


def test_crafted_sessions_are_sampled_at_the_configured_rate(settings: Settings, redis_client: redis.Redis,
                                                             tmp_path: Path, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    settings = settings.model_copy(update={"routing_sample_rate": RATE, "curation_seed_size": 1, "chunk_size": 50})
    crafted, tries = crafted_sessions(N, RATE)
    assert all(unkeyed_fraction(content_hash(s)) < RATE for s in crafted)  # all 200 in the unkeyed sample
    open_store(settings).put_bytes(keyspace.sample_secret_object(), DEPLOYMENT_KEY)
    seed = {"session_id": "ordinary-seed", "events": [{"type": "page_view", "url": "/"}]}  # ends the seed phase

    summary = run_ingest(settings, [str(write_jsonl(tmp_path / "crafted.jsonl", [seed, *crafted]))],
                         client=redis_client)
    assert summary.enqueued == N + 1
    routes: Counter[str] = Counter()
    for queue in ("teacher", "student"):
        for chunk in queued_chunks(settings, redis_client, queue):
            routes.update(chunk.route for s in chunk.sessions if s.session_id.startswith("crafted-"))
    assert routes["seed"] == 0 and routes["sample"] + routes["steady"] == N
    sigma = math.sqrt(N * RATE * (1 - RATE))
    assert abs(routes["sample"] - N * RATE) <= 3 * sigma, routes  # unkeyed: all 200
    assert redis_client.get(keyspace.sample_secret(settings)) is None  # the deployment's stored key was used
    record_result(request, scenario="200 crafted sessions against the sample",
                  load=f"{N} sessions ground ({tries} hashes, {tries / N:.0f} a session) to land in the unkeyed "
                       f"{RATE:.0%} sample, one `labelq ingest` run",
                  faults="submitter-chosen content hashes",
                  lost=N + 1 - summary.enqueued, duplicates=summary.duplicates,
                  seconds=round(time.monotonic() - started, 1), sampled=routes["sample"],
                  expected=N * RATE, sigma=round(sigma, 2), unkeyed_sampled=N)
