"""The keyspace: key shapes other tools and the docs depend on, one dead-letter layout, Lua in files."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from labelq import keyspace, lua
from labelq.deadletter import DeadLetterSink
from labelq.keyspace import (
    AdapterFile,
    BucketFile,
    BudgetField,
    EscalationField,
    RoutingField,
    Stat,
)
from labelq.schemas import DeadLetter
from labelq.settings import Settings
from labelq.store import LocalStore

ROOT = Path(__file__).resolve().parents[2]
S = Settings(redis_key_prefix="labelq:")


def test_queue_lists_are_what_keda_and_the_readme_name() -> None:
    assert keyspace.queue(S, "teacher") == "labelq:teacher" and keyspace.queue(S, "student") == "labelq:student"
    assert keyspace.unacked(S) == "labelq:unacked"  # kombu's, under its global_keyprefix
    readme = (ROOT / "README.md").read_text()
    assert "`labelq:teacher`" in readme and "`labelq:student`" in readme
    keda = (ROOT / "infra" / "k8s" / "keda.yaml").read_text()
    assert 'listName: "labelq:teacher"' in keda and 'listName: "labelq:student"' in keda


@pytest.mark.parametrize(("built", "expected"), [
    (keyspace.stats(S, "t"), "labelq:stats:t"),
    (keyspace.stats_prefix(S), "labelq:stats:"),
    (keyspace.dlq_reasons(S), "labelq:dlq:reasons"),
    (keyspace.dlq_task(S, "t"), "labelq:dlq:task:t"),
    (keyspace.chunk_done(S, "teacher", "c1"), "labelq:done:teacher:c1"),
    (keyspace.chunk_attempts(S, "student", "c1"), "labelq:attempts:student:c1"),
    (keyspace.teacher_attempts(S, "t", "h1"), "labelq:attempts:teacher:t:h1"),
    (keyspace.seen(S, "t", "2026-11-21"), "labelq:seen:t:2026-11-21"),
    (keyspace.seen_count(S, "t", "2026-11-21"), "labelq:seen:t:2026-11-21:n"),
    (keyspace.seen_legacy(S, "t"), "labelq:seen:t"),
    (keyspace.memory_reserve(S), "labelq:memory:reserve"),
    (keyspace.claim_reply(S, "x"), "labelq:claim:x"),
    (keyspace.routing(S, "t"), "labelq:routing:t"),
    (keyspace.routing_strata(S, "t"), "labelq:routing:t:strata"),
    (keyspace.ledger(S, "t"), "labelq:ledger:t"),
    (keyspace.budget_legacy(S, "t"), "labelq:budget:t"),
    (keyspace.batch_settled(S, "t", "j1", "r0001-p0001"), "labelq:batch:settled:t:j1:r0001-p0001"),
    (keyspace.batch_lock(S, "t", "j1"), "labelq:lock:batch:t:j1"),
    (keyspace.teacher_cache(S, "gpt", "p1", "h1"), "labelq:cache:gpt:p1:h1"),
    (keyspace.teacher_paused(S, "t"), "labelq:paused:teacher:t"),
    (keyspace.adapter_current(S, "t"), "labelq:adapter:t:current"),
    (keyspace.adapter_pinned(S, "t"), "labelq:adapter:t:pinned"),
    (keyspace.adapter_history(S, "t"), "labelq:adapter:t:history"),
    (keyspace.train_lock(S, "t", "v0001"), "labelq:lock:train:t:v0001"),
    (keyspace.curate_lock(S, "t"), "labelq:lock:curate:t"),
    (keyspace.curation(S, "t"), "labelq:curation:t"),
    (keyspace.curation_trigger(S, "t", 500), "labelq:curation:t:trigger:500"),
    (keyspace.escalation(S, "t"), "labelq:escalation:t"),
    (keyspace.escalation_decision(S, "c1"), "labelq:escalation:chunk:c1"),
    (keyspace.sample_secret(S), "labelq:secret:sample"),
])
def test_redis_key_shapes_stay_the_same_on_the_wire(built: str, expected: str) -> None:
    assert built == expected


def test_multi_key_families() -> None:
    assert keyspace.budget_keys(S, "t", "2026-11") == [
        "labelq:budget:t:2026-11", "labelq:budget:t:2026-11:exp", "labelq:budget:t:2026-11:amt"]
    assert keyspace.rate_limit_keys(S) == ["labelq:rl:req", "labelq:rl:tok", "labelq:rl:tok_sum", "labelq:rl:tat"]


def test_stats_fields() -> None:
    assert [s.value for s in Stat] == ["ingested", "duplicates", "labelled_teacher", "labelled_student",
                                       "dead_teacher", "dead_student", "escalated_student", "student_engine_ms"]
    for stage in ("teacher", "student"):
        assert Stat(keyspace.labelled_stat(stage)) and Stat(keyspace.dead_stat(stage))
    assert keyspace.ledger_field("gpt-4o", keyspace.LedgerMetric.USD_MICRO) == "gpt-4o|usd_micro"
    assert keyspace.parse_ledger_field("org/model|v2|calls") == ("org/model|v2", "calls")


def test_store_paths() -> None:
    assert keyspace.labels("teacher", "t", "c1") == "labels/teacher/t/c1.jsonl"
    assert keyspace.labels_prefix("student") == "labels/student/"
    assert keyspace.labels_prefix("student", "t") == "labels/student/t/"
    assert keyspace.task_of_labels(keyspace.labels("human", "t", "x")) == "t"
    assert keyspace.review_labels("t", "v0001") == "labels/human/t/review-v0001.jsonl"
    assert keyspace.inputs("teacher", "t", "c1") == "inputs/teacher/t/c1.jsonl"
    assert keyspace.inputs_prefix("teacher", "t") == "inputs/teacher/t/"
    assert keyspace.inputs_of_labels(keyspace.labels("teacher", "a b", "c1")) == keyspace.inputs("teacher", "a b", "c1")
    # The write log: keys that sort by write time and name the chunk's objects.
    at = datetime(2026, 3, 1, 23, 59, 59, 250_000, tzinfo=UTC)
    stamp = keyspace.write_stamp(at)
    assert stamp == "20260301/235959.250000" and keyspace.shift_stamp(stamp, 1) == "20260302/000000.250000"
    entry = keyspace.written("teacher", "a b", "c/1", stamp)
    assert entry == "written/teacher/a%20b/20260301/235959.250000-c%2F1"
    assert keyspace.parse_written(entry) == (stamp, keyspace.labels("teacher", "a b", "c/1"),
                                             keyspace.inputs("teacher", "a b", "c/1"))
    assert keyspace.parse_written(keyspace.labels("teacher", "t", "c1")) is None
    assert keyspace.written_prefix("teacher", "a b", stamp) < entry < keyspace.written(
        "teacher", "a b", "a", keyspace.shift_stamp(stamp, 1e-6))
    assert keyspace.curated_prefix() == "curated/" and keyspace.curated_prefix("t") == "curated/t/"
    assert keyspace.bucket_file("t", "v0001", BucketFile.READY) == "curated/t/v0001/_READY"
    assert keyspace.bucket_file("t", "v0001", keyspace.split_file("val")) == "curated/t/v0001/val.jsonl"
    assert keyspace.parse_bucket_file("curated/t/v0001/manifest.json") == ("t", "v0001", "manifest.json")
    assert keyspace.parse_bucket_file("curated/t/v0001") is None
    assert keyspace.adapter_prefix("t") == "adapters/t" and keyspace.adapter_prefix("t", 3) == "adapters/t/v3"
    assert keyspace.adapter_file("t", 3, AdapterFile.METRICS) == "adapters/t/v3/metrics.json"
    assert keyspace.adapter_version_of("adapters/t/v12/adapter_config.json") == 12
    assert keyspace.adapter_version_of("adapters/t/registry.json") is None
    assert keyspace.budget_spend("t", "2026-11-21", "host-1") == "budget/t/2026-11-21/host-1.json"
    assert keyspace.budget_spend_prefix("t", "total") == "budget/t/total/"
    assert keyspace.batch_jobs_prefix("t") == "batch-jobs/t/" and keyspace.batch_jobs_prefix("t", "ab") == "batch-jobs/t/ab/"
    assert keyspace.batch_jobs_prefix("t", "ab", "run-0001") == "batch-jobs/t/ab/run-0001/"
    assert keyspace.batch_job_file("t", "ab", "run-0001", "job.json") == "batch-jobs/t/ab/run-0001/job.json"
    assert keyspace.registry_mirror("t") == "adapters/t/registry.json"
    assert keyspace.sample_secret_object() == "secrets/sample.key"
    assert keyspace.payload("t", "ab12cd34") == "payloads/t/ab/ab12cd34.json"
    assert keyspace.payloads_prefix() == "payloads/" and keyspace.payloads_prefix("t") == "payloads/t/"
    forged = keyspace.payload("t", "../../secrets/sample.key")  # a content hash from a message stays one file
    assert forged.startswith("payloads/t/") and forged.count("/") == 3 and ".." not in forged.split("/")


def test_data_in_a_path_stays_one_segment() -> None:
    path = keyspace.dead_letters("teacher", "../../etc", "a/b")
    assert path.startswith("deadletter/teacher/") and path.count("/") == 3 and ".." not in path.split("/")


def test_dead_letters_have_one_layout_for_workers_and_ingest(tmp_path: Path) -> None:
    """``deadletter/<stage>/<task>/<name>.jsonl`` for a worker's chunk and an ingest batch alike."""
    assert keyspace.dead_letters("student", "t", "c1") == "deadletter/student/t/c1.jsonl"
    assert keyspace.dead_letters_prefix() == "deadletter/"
    assert keyspace.dead_letters_prefix("ingest", "t") == "deadletter/ingest/t/"

    class Pipe:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str, int]] = []

        def hincrby(self, key: str, field: str, n: int) -> None:
            self.calls.append((key, field, n))

        def execute(self) -> None:
            pass

    pipe = Pipe()

    class Client:
        def pipeline(self, transaction: bool = True) -> Pipe:
            return pipe

    store = LocalStore(tmp_path)
    sink = DeadLetterSink(S, store, Client(), stage="ingest", batch_name="run1")  # type: ignore[arg-type]
    for task in ("t", "t", "u"):
        sink.add(DeadLetter(reason="invalid_json", stage="ingest", task=task, raw="{"))
    sink.flush()
    written = sorted(store.list(keyspace.dead_letters_prefix("ingest")))
    assert [k.split("/")[:3] for k in written] == [["deadletter", "ingest", "t"], ["deadletter", "ingest", "u"]]
    assert all(re.fullmatch(r"deadletter/ingest/[tu]/\d{4}-\d\d-\d\d-run1-000000\.jsonl", k) for k in written)
    assert ("labelq:dlq:task:t", "invalid_json", 2) in pipe.calls and ("labelq:dlq:reasons", "invalid_json", 1) in pipe.calls


def test_every_lua_file_is_named_loads_and_is_packaged() -> None:
    folder = ROOT / "labelq" / "lua"
    assert {p.stem for p in folder.glob("*.lua")} == set(lua.NAMES)
    for name in lua.NAMES:
        text = lua.source(name)
        assert "redis.call(" in text and text.startswith("--")  # code, with its notes on top
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.lua" in data["labelq.lua"]


@pytest.mark.parametrize(("script", "fields"), [
    ("seed_route", list(RoutingField)), ("budget_reserve", list(BudgetField)),
    ("budget_settle", [BudgetField.SPENT, BudgetField.RESERVED]),
    ("budget_seed", [BudgetField.SPENT, BudgetField.SEEDED]), ("escalation_grant", list(EscalationField)),
])
def test_lua_names_the_hash_fields_keyspace_names(script: lua.Name, fields: list[Any]) -> None:
    for field in fields:
        assert f"'{field.value}'" in lua.source(script), field


def test_no_inline_lua_in_python() -> None:
    offenders = [str(p.relative_to(ROOT)) for pkg in ("labelq", "producer", "workers", "trainer")
                 for p in (ROOT / pkg).rglob("*.py") if "redis.call(" in p.read_text()]
    assert offenders == []


def test_a_script_is_registered_once_per_client() -> None:
    one, other = redis.Redis(), redis.Redis()  # registering needs no server: the SHA is computed here
    assert lua.script(one, "commit_chunk") is lua.script(one, "commit_chunk")
    assert lua.script(other, "commit_chunk") is not lua.script(one, "commit_chunk")
    assert lua.script(one, "enqueue").sha != lua.script(one, "commit_chunk").sha
