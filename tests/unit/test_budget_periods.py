"""Budget periods (UTC calendar), the settings that choose them, and Batch API parts at the provider's limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from labelq.budget import keys_expire_at_ms, period_end, period_id
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.synth import generate
from tests.support.teacher import make_chunk
from workers.teacher.batch_job import SavedSession, split_rows
from workers.teacher.client import Completion
from workers.teacher.session import Ask, Labelled, SessionLabelling

LATE = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_period_ids_and_when_they_reset() -> None:
    assert period_id("total", LATE) == "total" and period_end("total") is None
    assert period_id("month", LATE) == "2026-12" and period_end("2026-12") == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_id("day", LATE) == "2026-12-31" and period_end("2026-12-31") == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_end("2026-02") == datetime(2026, 3, 1, tzinfo=UTC)
    assert period_end("2028-02-28") == datetime(2028, 2, 29, tzinfo=UTC)  # a leap day is a period of its own
    # UTC, whatever the caller's zone: 23:30 in New York on the 20th is the 21st in UTC.
    from zoneinfo import ZoneInfo

    assert period_id("day", datetime(2026, 11, 20, 23, 30, tzinfo=ZoneInfo("America/New_York"))) == "2026-11-21"
    assert keys_expire_at_ms("total") == 0
    assert keys_expire_at_ms("2026-12-31") == int(datetime(2027, 1, 8, tzinfo=UTC).timestamp() * 1000)


def test_budget_period_setting_names_its_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().teacher_budget_period == "total"
    monkeypatch.setenv("LABELQ_TEACHER_BUDGET_PERIOD", "day")
    assert Settings().teacher_budget_period == "day"
    monkeypatch.setenv("LABELQ_TEACHER_BUDGET_PERIOD", "weekly")
    with pytest.raises(ValidationError, match="teacher_budget_period"):
        Settings()


def rows(sizes: list[int]) -> list[tuple[str, bytes]]:
    return [(f"s{i}", b"x" * n) for i, n in enumerate(sizes)]


def test_parts_split_at_the_request_count_and_the_file_size() -> None:
    by_count = split_rows(rows([10] * 7), max_requests=3, max_bytes=10_000)
    assert [len(p) for p in by_count] == [3, 3, 1]
    assert [cid for p in by_count for cid, _ in p] == [f"s{i}" for i in range(7)]  # order kept, nothing lost
    # Each row takes its bytes and a newline: 40 bytes hold three rows of 12 (39), not four.
    by_size = split_rows(rows([12] * 7), max_requests=100, max_bytes=40)
    assert [len(p) for p in by_size] == [3, 3, 1]
    assert all(sum(len(r) + 1 for _, r in p) <= 40 for p in by_size)
    assert split_rows([], max_requests=3, max_bytes=40) == []
    with pytest.raises(ValueError, match="s1 is 41 bytes, over the batch file limit of 40"):
        split_rows(rows([5, 40]), max_requests=3, max_bytes=40)


def test_a_saved_session_resumes_where_it_was_sent() -> None:
    settings, spec = Settings(), load_spec("session-label")
    item = make_chunk(list(generate(1, seed=3))).sessions[0]
    state = SessionLabelling.start(spec, settings, item)
    first = state.request
    state.answered(Completion("The user " + "very " * 20 + "long answer", 100, 30, "gpt-4o"), 0.001)
    assert isinstance(state.step, Ask) and state.repaired  # one repair request, with the bad answer in it
    saved = SavedSession.model_validate_json(SavedSession.of(state).model_dump_json())
    again = saved.restore(spec, settings, item)
    assert again.request == state.request and again.request != first and again.repaired
    assert again.spend.cost_usd == pytest.approx(0.001) and again.spend.input_tokens == 100
    assert again.answered(Completion("Searches running shoes", 90, 5, "gpt-4o"), 0.001) == Labelled(
        "Searches running shoes", 3)
    fresh = SavedSession.of(SessionLabelling.start(spec, settings, item))
    assert fresh.request is None  # a first request is rebuilt from the session, not stored twice
    assert fresh.restore(spec, settings, item).request == first
