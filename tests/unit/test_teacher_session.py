"""The teacher's per-session state machine, in-process: no Redis, no HTTP server."""

from __future__ import annotations

import orjson
import pytest

from labelq.hashing import content_hash
from labelq.schemas import SessionItem
from labelq.settings import Settings
from labelq.spec import TaskSpec, load_spec
from labelq.synth import generate
from workers.teacher.batch import parse_row, request_row
from workers.teacher.client import Completion, TeacherCallError
from workers.teacher.session import (
    Ask,
    CachedLabel,
    Dead,
    Halted,
    Labelled,
    Retry,
    SessionLabelling,
)

GOOD = "Searches running shoes and pays by card"
WORDY = "This user searched for many running shoes and then paid for them by card"


@pytest.fixture
def spec() -> TaskSpec:
    return load_spec("session-label")


@pytest.fixture
def settings() -> Settings:
    return Settings(teacher_max_attempts=3)


@pytest.fixture
def item() -> SessionItem:
    session = next(iter(generate(1, seed=7)))
    return SessionItem(session_id=str(session["session_id"]), content_hash=content_hash(session), payload=session)


def answer(text: str, input_tokens: int = 100, output_tokens: int = 10) -> Completion:
    return Completion(text, input_tokens, output_tokens, "gpt-4o")


def retryable(reason: str = "teacher_http_500") -> TeacherCallError:
    return TeacherCallError(reason, "server error", retryable=True)


def test_first_request_renders_the_session_without_ground_truth(
    spec: TaskSpec, settings: Settings, item: SessionItem
) -> None:
    state = SessionLabelling.start(spec, settings, item)
    assert isinstance(state.step, Ask) and not state.step.repair and not state.done
    system, user = state.request
    assert system["content"] == spec.teacher.system_prompt
    assert user["content"].startswith("<session>\n") and "_reference" not in user["content"]


def test_a_valid_answer_is_labelled_and_recorded(spec: TaskSpec, settings: Settings, item: SessionItem) -> None:
    state = SessionLabelling.start(spec, settings, item)
    step = state.answered(answer(f'Label: "{GOOD}."'), 0.002)
    assert step == Labelled(GOOD, 7) and state.done
    record = state.record(model="gpt-4o", chunk_id="c1", flags=["route:seed"], latency_ms=12.34)
    assert (record.session_id, record.content_hash, record.label, record.words) == (
        item.session_id, item.content_hash, GOOD, 7)
    assert (record.input_tokens, record.output_tokens, record.cost_usd) == (100, 10, 0.002)
    assert record.flags == ["route:seed"] and record.latency_ms == 12.3
    assert record.prompt_version == spec.prompt_version and record.source == "teacher"


def test_a_cache_hit_costs_nothing(spec: TaskSpec, settings: Settings, item: SessionItem) -> None:
    state = SessionLabelling.start(spec, settings, item, CachedLabel(GOOD, 7))
    assert state.step == Labelled(GOOD, 7, cached=True) and state.done and state.request == []
    record = state.record(model="gpt-4o", chunk_id="c1", flags=[])
    assert record.flags == ["cache_hit"] and record.cost_usd == 0 and record.input_tokens == 0


def test_one_repair_request_then_labelled(spec: TaskSpec, settings: Settings, item: SessionItem) -> None:
    state = SessionLabelling.start(spec, settings, item)
    first = list(state.request)
    step = state.answered(answer(WORDY), 0.002)
    assert isinstance(step, Ask) and step.repair and state.attempts == 0  # a repair is not a failed attempt
    assert step.messages[:2] == first and step.messages[2] == {"role": "assistant", "content": WORDY}
    assert step.messages[3]["role"] == "user" and state.request == step.messages
    # A failure on the repair request retries the repair request.
    assert isinstance(state.failed(retryable()), Retry) and state.request == step.messages
    assert state.answered(answer(GOOD, 150, 8), 0.003) == Labelled(GOOD, 7)
    record = state.record(model="gpt-4o", chunk_id="c1", flags=["batch_api"])
    assert record.flags == ["batch_api", "repaired"]
    assert (record.input_tokens, record.output_tokens, record.cost_usd) == (250, 18, 0.005)  # both answers


def test_broken_after_the_repair_is_dead_with_the_raw_answer(
    spec: TaskSpec, settings: Settings, item: SessionItem
) -> None:
    state = SessionLabelling.start(spec, settings, item)
    state.answered(answer("HACKED " + WORDY), 0.001)
    step = state.answered(answer("HACKED again " + WORDY), 0.001)
    assert isinstance(step, Dead) and step.reason == "contract_violation" and "after one repair" in step.detail
    letter = state.dead_letter(chunk_id="c9")
    assert letter.raw == "HACKED again " + WORDY and letter.stage == "teacher" and letter.chunk_id == "c9"
    assert (letter.session_id, letter.content_hash, letter.task) == (item.session_id, item.content_hash, spec.name)


def test_retryable_failures_until_attempts_run_out(spec: TaskSpec, settings: Settings, item: SessionItem) -> None:
    state = SessionLabelling.start(spec, settings, item)
    first = state.failed(TeacherCallError("teacher_http_429", "rate limited", retryable=True, retry_after_s=2.0))
    assert first == Retry("teacher_http_429", "rate limited", 1, 2.0) and not state.done
    assert state.failed(retryable()) == Retry("teacher_http_500", "server error", 2)
    last = state.failed(retryable())
    assert last == Dead("teacher_http_500", "gave up after 3 attempts: server error") and state.done


def test_attempts_counted_elsewhere_are_honoured(spec: TaskSpec, settings: Settings, item: SessionItem) -> None:
    # The real-time teacher counts attempts in Redis: a redelivered chunk may already be at 3.
    state = SessionLabelling.start(spec, settings, item)
    step = state.failed(retryable("teacher_timeout"), attempt=3)
    assert isinstance(step, Dead) and step.detail.startswith("gave up after 3 attempts")


def test_permanent_operational_and_budget(spec: TaskSpec, settings: Settings, item: SessionItem) -> None:
    permanent = SessionLabelling.start(spec, settings, item)
    step = permanent.failed(TeacherCallError("teacher_http_400", "the provider rejected the request"))
    assert step == Dead("teacher_http_400", "the provider rejected the request") and permanent.attempts == 0
    auth = SessionLabelling.start(spec, settings, item)
    assert auth.failed(TeacherCallError("teacher_auth", "refused", operational=True)) == Halted("auth")
    broke = SessionLabelling.start(spec, settings, item)
    assert broke.budget_refused() == Halted("budget") and broke.done


def test_outages_are_retried_uncounted_and_never_dead(spec: TaskSpec, settings: Settings, item: SessionItem) -> None:
    state = SessionLabelling.start(spec, settings, item)
    for _ in range(10):  # far past teacher_max_attempts (3)
        step = state.failed(TeacherCallError("teacher_http_503", "server error", outage=True, retry_after_s=1.0))
        assert step == Retry("teacher_http_503", "server error", 0, 1.0) and not state.done
    assert state.attempts == 0
    assert state.provider_out() == Halted("provider") and state.done
    missing = SessionLabelling.start(spec, settings, item)
    step = missing.failed(TeacherCallError("teacher_model_not_found", "no such model", config=True))
    assert step == Halted("config") and missing.attempts == 0


def test_a_finished_session_takes_no_more_events(spec: TaskSpec, settings: Settings, item: SessionItem) -> None:
    state = SessionLabelling.start(spec, settings, item)
    state.answered(answer(GOOD), 0.001)
    with pytest.raises(ValueError, match="after Labelled"):
        state.answered(answer(GOOD), 0.001)
    with pytest.raises(ValueError, match="not dead"):
        state.dead_letter(chunk_id=None)
    dead = SessionLabelling.start(spec, settings, item)
    dead.failed(TeacherCallError("teacher_http_404", "not found"))
    with pytest.raises(ValueError, match="not labelled"):
        dead.record(model="m", chunk_id="c", flags=[])


def test_batch_rows_become_answers_or_retryable_failures(spec: TaskSpec, settings: Settings) -> None:
    row = orjson.loads(request_row(settings, spec, "abc", [{"role": "user", "content": "hi"}]))
    assert row["custom_id"] == "abc" and row["body"]["max_tokens"] == spec.teacher.max_output_tokens
    assert row["body"]["model"] == "gpt-4o" and row["body"]["temperature"] == spec.teacher.temperature
    # A reasoning model: one cap for answer and thinking (what the budget reserves), no temperature.
    o3 = orjson.loads(request_row(settings.model_copy(update={"teacher_model": "o3-2025-04-16"}), spec, "abc",
                                  [{"role": "user", "content": "hi"}]))["body"]
    assert o3["max_completion_tokens"] == spec.teacher.max_output_tokens + 2048
    assert "max_tokens" not in o3 and "temperature" not in o3
    thought = parse_row({"custom_id": "abc", "response": {"status_code": 200, "body": {
        "model": "o3", "choices": [{"message": {"content": GOOD}}],
        "usage": {"prompt_tokens": 90, "completion_tokens": 307, "total_tokens": 397,
                  "completion_tokens_details": {"reasoning_tokens": 300}}}}}, "o3")
    assert thought == Completion(GOOD, 90, 307, "o3")  # reasoning is inside completion_tokens: counted once
    ok = parse_row({"custom_id": "abc", "response": {"status_code": 200, "body": {
        "model": "gpt-4o-2024", "choices": [{"message": {"content": GOOD}}],
        "usage": {"prompt_tokens": 90, "completion_tokens": 7}}}}, "gpt-4o")
    assert ok == Completion(GOOD, 90, 7, "gpt-4o-2024")
    expired = parse_row({"custom_id": "abc", "error": {"code": "batch_expired"}}, "gpt-4o")
    assert isinstance(expired, TeacherCallError) and expired.outage and expired.reason == "batch_failed"
    assert "batch_expired" in str(expired)
    failed = parse_row({"custom_id": "abc", "response": {"status_code": 500, "body": {}}}, "gpt-4o")
    assert isinstance(failed, TeacherCallError) and "500" in str(failed) and failed.outage
    refused = parse_row({"custom_id": "abc", "response": {"status_code": 400, "body": {}}}, "gpt-4o")
    assert isinstance(refused, TeacherCallError) and refused.retryable and not refused.outage
