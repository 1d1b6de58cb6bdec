"""Every call priced, reasoning included; only a teacher chosen on purpose starts. Against the loopback
OpenAI server and a real Redis: what the teacher sends, bills and reserves, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from labelq.ledger import read_ledger
from labelq.queue.task import Paused
from labelq.settings import DEFAULT_PRICES, Settings
from labelq.store import open_store
from labelq.synth import generate
from tests.support.cli import labelq
from tests.support.openai_server import FakeConfig, FakeOpenAI, answer_for
from tests.support.teacher import API_KEY, chunks_of, teacher_records, teacher_settings
from workers.teacher.tasks import run_teacher_chunk

pytestmark = pytest.mark.integration
THINKING = 300  # reasoning tokens the fake server spends on every answer


def never_requeue(chunk: object, items: object) -> None:
    raise AssertionError("nothing is handed back here")


def test_reasoning_tokens_are_billed_once_as_output(settings: Settings, redis_client: redis.Redis) -> None:
    with FakeOpenAI(FakeConfig(reasoning_tokens=THINKING)) as fake:
        s = teacher_settings(settings, fake.base_url, teacher_model="o3")
        result = run_teacher_chunk(s, open_store(s), redis_client, chunks_of(6, 6, seed=4)[0], requeue=never_requeue)
        assert result.labelled == 6
        cap = 24 + 2048  # the spec's max_output_tokens plus the default thinking room
        for request in fake.requests:
            body = request["body"]
            assert body["max_completion_tokens"] == cap and "max_tokens" not in body and "temperature" not in body
        per_in, per_out = DEFAULT_PRICES["o3"]
        for r in teacher_records(s):
            visible = len(r.label) // 4 + 1  # the fake's count of the answer's own tokens
            assert r.output_tokens == visible + THINKING  # in completion_tokens once, not dropped, not doubled
            assert r.cost_usd == pytest.approx((r.input_tokens * per_in + r.output_tokens * per_out) / 1e6)
        ledger = read_ledger(redis_client, s, "session-label").models["o3"]
        assert ledger.calls == 6 and ledger.output_tokens == sum(r.output_tokens for r in teacher_records(s))


def test_the_worst_case_reserves_the_thinking(settings: Settings, redis_client: redis.Redis) -> None:
    """$0.01 covers an o3 call's prompt and 24 answer tokens, not 2,048 tokens of thinking on top."""
    with FakeOpenAI(FakeConfig(reasoning_tokens=THINKING)) as fake:
        s = teacher_settings(settings, fake.base_url, teacher_model="o3", teacher_budget_usd=0.01)
        chunk = chunks_of(1, 1, seed=5)[0]
        with pytest.raises(Paused, match="budget"):
            run_teacher_chunk(s, open_store(s), redis_client, chunk, requeue=never_requeue)
        assert fake.requests == []  # refused before anything was sent
        no_room = s.model_copy(update={"teacher_reasoning_tokens": 0})
        assert run_teacher_chunk(no_room, open_store(s), redis_client, chunk, requeue=never_requeue).labelled == 1
        assert fake.requests[0]["body"]["max_completion_tokens"] == 24


def test_a_reasoning_deployment_no_rule_knows_is_learned_from_the_providers_400(
        settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """An Azure-style deployment name the family rule cannot see through: the provider refuses
    ``max_tokens`` (400 unsupported_parameter), the same request goes again with ``max_completion_tokens``,
    nothing is dead-lettered, and the model is remembered (later requests reserve thinking room)."""
    from workers.teacher import reasoning

    monkeypatch.setattr(reasoning, "LEARNED_REASONING_MODELS", set())
    with FakeOpenAI(FakeConfig(reasoning_tokens=THINKING, reasoning_models=("labels-reasoner",))) as fake:
        s = teacher_settings(settings, fake.base_url, teacher_model="labels-reasoner", teacher_concurrency=1,
                             teacher_prices={**settings.teacher_prices, "labels-reasoner": (1.1, 4.4)})
        first, second = chunks_of(8, 4, seed=7)
        assert run_teacher_chunk(s, open_store(s), redis_client, first, requeue=never_requeue).labelled == 4
        refused = [r for r in fake.requests if r["fault"] == "400_parameter"]
        assert len(refused) == 1 and refused[0]["body"]["max_tokens"] == 24  # once: then it is known
        answered = [r["body"] for r in fake.requests if r["fault"] != "400_parameter"]
        assert len(answered) == 4 and all("max_tokens" not in b and "temperature" not in b for b in answered)
        assert answered[0]["max_completion_tokens"] == 24  # the retry keeps the cap its reservation covers
        assert {b["max_completion_tokens"] for b in answered[1:]} == {24 + 2048}  # now with thinking room
        before = len(fake.requests)
        assert run_teacher_chunk(s, open_store(s), redis_client, second, requeue=never_requeue).labelled == 4
        assert all("max_tokens" not in r["body"] for r in fake.requests[before:])
        assert all(r.output_tokens > THINKING for r in teacher_records(s))  # thinking billed, once


def test_a_dated_snapshot_costs_its_familys_price(settings: Settings, redis_client: redis.Redis) -> None:
    with FakeOpenAI() as fake:
        s = teacher_settings(settings, fake.base_url, teacher_model="gpt-4o-mini-2024-07-18")
        run_teacher_chunk(s, open_store(s), redis_client, chunks_of(4, 4, seed=6)[0], requeue=never_requeue)
        per_in, per_out = DEFAULT_PRICES["gpt-4o-mini"]  # not gpt-4o's, not $0
        records = teacher_records(s)
        assert len(records) == 4 and fake.requests[0]["body"]["max_tokens"] == 24
        assert all(r.cost_usd == pytest.approx((r.input_tokens * per_in + r.output_tokens * per_out) / 1e6)
                   and r.cost_usd > 0 for r in records)


def test_a_teacher_worker_without_a_key_refuses_to_start_a_student_worker_starts(settings: Settings) -> None:
    from labelq.queue.app import create_app
    from labelq.queue.worker import worker_thread
    from workers.teacher.tasks import register

    s = settings.model_copy(update={"teacher_backend": "openai", "teacher_api_key": None})
    app = create_app(s)
    register(app)
    with pytest.raises(SystemExit, match="OPENAI_API_KEY") as refused, worker_thread(app, ["teacher"]):
        pass
    assert "LABELQ_TEACHER_BACKEND=replay" in str(refused.value)
    with worker_thread(app, ["student"]):  # the same app, another queue: no teacher key needed
        pass


def test_an_empty_key_never_becomes_replay(settings: Settings, tmp_path: Path) -> None:
    """compose's ${OPENAI_API_KEY:-}: before, an empty key meant replay, and a session's own `_reference`
    was accepted as its label. Now `labelq teach` refuses before reading a session, and pays for nothing."""
    sessions = list(generate(5, seed=8))
    for s in sessions:
        s["_reference"] = {"label": "Attacker chose this label"}
    path = tmp_path / "seed.jsonl"
    path.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in sessions))
    with FakeOpenAI() as fake:
        openai = settings.model_copy(update={"teacher_backend": "openai"})
        for key in ("", "   "):
            done = labelq(["teach", str(path), "--json"], openai, env={"OPENAI_API_KEY": key})
            assert done.returncode == 2, done.stderr
            assert b"OPENAI_API_KEY" in done.stderr and b"LABELQ_TEACHER_BACKEND=replay" in done.stderr
        assert teacher_records(settings) == []
        # The same sessions with a key go to the model; the submitted reference is never read.
        env = {"OPENAI_API_KEY": API_KEY, "LABELQ_TEACHER_BASE_URL": fake.base_url}
        done = labelq(["teach", str(path), "--json"], openai, env=env)
        assert done.returncode == 0, done.stderr
        labels = {r.label for r in teacher_records(settings)}
        assert len(fake.requests) == 5 and labels <= {answer_for(r["body"]["messages"][1]["content"])
                                                       for r in fake.requests}


def test_the_demo_with_a_real_teacher_and_no_key_stops_before_it_builds_anything(tmp_path: Path) -> None:
    done = labelq(["demo", "-n", "50"], env={"LABELQ_STATE_DIR": str(tmp_path / "state"),
                                              "LABELQ_TEACHER_BACKEND": "openai", "OPENAI_API_KEY": ""})
    assert done.returncode == 2 and b"OPENAI_API_KEY" in done.stderr, done.stderr
    assert not (tmp_path / "state" / "runs").exists()  # no run started, no session generated


def test_a_chunk_for_an_unpriced_model_sends_nothing(settings: Settings, redis_client: redis.Redis) -> None:
    """A worker started without the start-up check (in-process, say) meets the same refusal per chunk: a
    ConfigError, which the error policy turns into waiting on configuration, never a dead letter."""
    from labelq.errors import ConfigError

    with FakeOpenAI() as fake:
        s = teacher_settings(settings, fake.base_url, teacher_model="my-azure-gpt4o")
        with pytest.raises(ConfigError, match="LABELQ_TEACHER_PRICES"):
            run_teacher_chunk(s, open_store(s), redis_client, chunks_of(3, 3, seed=7)[0], requeue=never_requeue)
        assert fake.requests == []
