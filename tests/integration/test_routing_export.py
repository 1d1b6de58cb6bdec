"""The routing policy (seed, stratified seed, sample, steady), audit balance and export round trip."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.audit import audit
from labelq.export import latest_labels, write_export
from labelq.keyspace import Stat
from labelq.records import commit_chunk
from labelq.routing import RoutingState
from labelq.schemas import LabelRecord
from labelq.settings import Settings
from labelq.status import gather
from labelq.store import open_store
from labelq.synth import generate
from producer.run import run_ingest
from tests.support.helpers import queued_chunks, write_jsonl

pytestmark = pytest.mark.integration


def routed(settings: Settings, client: redis.Redis) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for queue in ("teacher", "student"):
        for chunk in queued_chunks(settings, client, queue):
            counts[(queue, chunk.route)] += len(chunk.sessions)
    return counts


def test_seed_then_sample_then_students(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"curation_seed_size": 50, "routing_sample_rate": 0.1, "chunk_size": 32})
    sessions = list(generate(2000, seed=91))
    assert run_ingest(settings, [str(write_jsonl(tmp_path / "a.jsonl", sessions))],
                      client=redis_client).enqueued == 2000
    counts = routed(settings, redis_client)
    assert counts[("teacher", "seed")] == 50
    assert sum(counts.values()) == 2000 and set(counts) == {("teacher", "seed"), ("teacher", "sample"),
                                                             ("student", "steady")}
    sampled = counts[("teacher", "sample")]
    assert abs(sampled - 0.1 * 1950) < 4 * math.sqrt(1950 * 0.1 * 0.9)  # within 4 sigma
    routing = gather(settings, redis_client).tasks["session-label"].routing
    assert routing == RoutingState(phase="steady", seeded=50, seed_size=50, sample_rate=0.1, stratify_by=None)
    # A second file: the seed phase is over for this task, and the sample is a pure function of content.
    more = list(generate(500, seed=92))
    run_ingest(settings, [str(write_jsonl(tmp_path / "b.jsonl", more))], client=redis_client)
    assert routed(settings, redis_client)[("teacher", "seed")] == 50


def test_a_paused_teacher_gets_no_sample(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"curation_seed_size": 10, "routing_sample_rate": 0.2, "chunk_size": 32})
    redis_client.set(keyspace.teacher_paused(settings, "session-label"),
                     orjson.dumps({"reason": "budget of $50.00 is spent", "since": 0}))
    run_ingest(settings, [str(write_jsonl(tmp_path / "a.jsonl", list(generate(600, seed=93))))], client=redis_client)
    counts = routed(settings, redis_client)
    # Seeds still go to the teacher (no student without them); the sample goes to students, flagged.
    assert counts[("teacher", "seed")] == 10 and counts[("teacher", "sample")] == 0
    assert counts[("student", "sample_teacher_paused")] > 0.1 * 590
    assert sum(counts.values()) == 600


def test_stratified_seed_shares_the_seed_set_fairly(settings: Settings, redis_client: redis.Redis,
                                                    tmp_path: Path) -> None:
    settings = settings.model_copy(update={"curation_seed_size": 40, "routing_stratify_by": "user.device",
                                           "routing_sample_rate": 0.0, "chunk_size": 16})
    # 90% desktop: without stratification the seed set would be mostly desktop sessions.
    sessions = []
    for i, s in enumerate(generate(600, seed=93)):
        s["user"]["device"] = "desktop" if i % 10 else ("mobile" if i % 20 else "tablet")
        sessions.append(s)
    run_ingest(settings, [str(write_jsonl(tmp_path / "s.jsonl", sessions))], client=redis_client)
    seeds = [s for c in queued_chunks(settings, redis_client, "teacher") if c.route == "seed" for s in c.sessions]
    devices = Counter(s.payload["user"]["device"] for s in seeds)
    assert len(seeds) == 40
    assert devices["mobile"] >= 13 and devices["tablet"] >= 13 and devices["desktop"] <= 14


def test_audit_balances_and_export_round_trips(settings: Settings, redis_client: redis.Redis,
                                               tmp_path: Path) -> None:
    settings = settings.model_copy(update={"curation_seed_size": 10, "routing_sample_rate": 0.0, "chunk_size": 10})
    sessions = list(generate(30, seed=94))
    run_ingest(settings, [str(write_jsonl(tmp_path / "a.jsonl", sessions))], client=redis_client)
    result = audit(settings, redis_client)
    assert result.ok and result.tasks["session-label"].in_flight == 30
    store = open_store(settings)
    chunks = [c for q in ("teacher", "student") for c in queued_chunks(settings, redis_client, q)]
    for n, chunk in enumerate(chunks):  # label them as workers would, then take them off the queues
        source = "teacher" if chunk.route == "seed" else "student"
        records = [LabelRecord(session_id=s.session_id, content_hash=s.content_hash, task=chunk.task,
                               label=f"Label {n} {i}", source=source, model="m", prompt_version="p", words=3,
                               chunk_id=chunk.chunk_id, created_at=f"2026-03-0{1 + n % 3}T00:00:00+00:00")
                   for i, s in enumerate(chunk.sessions)]
        commit_chunk(settings, store, redis_client, stage=source, task=chunk.task, chunk_id=chunk.chunk_id,
                     records=records, dead_letters=[])
    redis_client.delete(keyspace.queue(settings, "teacher"), keyspace.queue(settings, "student"))
    assert audit(settings, redis_client).ok
    # A human relabels one session later: export keeps the latest label.
    first = sessions[0]["session_id"]
    human = next(r for r in latest_labels(store) if r.session_id == first).model_copy(
        update={"source": "human", "label": "Relabelled by a person", "created_at": "2026-04-01T00:00:00+00:00"})
    store.put_bytes(keyspace.labels("human", "session-label", "fix"), orjson.dumps(human.model_dump(mode="json")) + b"\n")
    everything = latest_labels(store)
    assert len(everything) == 30 and {r.session_id for r in everything} == {s["session_id"] for s in sessions}
    assert next(r for r in everything if r.session_id == first).label == "Relabelled by a person"
    for name in ("out.jsonl", "out.parquet"):
        write_export(everything, tmp_path / name)
    rows = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [LabelRecord.decode(r) for r in rows] == everything
    import pyarrow.parquet as pq

    assert [LabelRecord.decode(r) for r in pq.read_table(tmp_path / "out.parquet").to_pylist()] == everything
    march = latest_labels(store, sources=["teacher", "student"], since="2026-03-02", until="2026-03-03")
    assert march and all(r.created_at.startswith("2026-03-02") for r in march)
    # A lost chunk shows as a gap.
    redis_client.hincrby(keyspace.stats(settings, "session-label"), Stat.INGESTED, 5)
    gap = audit(settings, redis_client)
    assert not gap.ok and gap.tasks["session-label"].gap == 5
