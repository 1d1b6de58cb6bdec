"""The demo report's pure parts: windows, throughput, agreement, label lengths, the sample, cost, cell formatting,
and the page written from a summary (no dict or list reprs in it, the session rendering escaped)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from labelq.app import report_data as data
from labelq.app import report_html as page

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_window_width_is_round_and_cuts_the_span_into_at_most_twelve() -> None:
    assert data.window_s_for(0) == 1
    assert data.window_s_for(100) == 10  # 100 / 5 = 20 windows would be too many
    assert data.window_s_for(400) == 60
    assert data.window_s_for(10 * 86400) == 86400
    assert data.window_s_for(30 * 86400 + 1) == 30 * 86400 // 12 + 1  # past the round widths: the span / 12, up
    assert data.window_start(at(59.9), T0, 30) == 30 and data.window_start(at(60), T0, 30) == 60


def test_throughput_counts_labels_per_stage_per_window_and_shows_stalls() -> None:
    rows = data.throughput_rows({"teacher": [at(0), at(1), at(5)], "student": [at(20), at(41), at(42), at(43)],
                                 "idle": []}, window_s=10)
    assert [(r.stage, r.window_start_s, r.labels, r.labels_per_s) for r in rows] == [
        ("teacher", 0, 3, 0.3),
        ("student", 20, 1, 0.1), ("student", 30, 0, 0.0), ("student", 40, 3, 0.3)]
    assert data.throughput_rows({}, 10) == []
    wide = data.throughput_by_window([r.to_dict() for r in rows])
    assert wide == [{"window_start_s": 0, "student": None, "teacher": 0.3},
                    {"window_start_s": 20, "student": 0.1, "teacher": None},
                    {"window_start_s": 30, "student": 0.0, "teacher": None},
                    {"window_start_s": 40, "student": 0.3, "teacher": None}]


def test_agreement_rows_per_version_and_window() -> None:
    scored = [data.ScoredLabel(1, at(1), True, 1.0), data.ScoredLabel(1, at(2), False, 0.5),
              data.ScoredLabel(1, at(65), True, 0.9), data.ScoredLabel(2, at(70), True, 1.0),
              data.ScoredLabel(None, at(3), False, 0.1)]
    rows = data.reference_agreement(scored, T0, 60)
    assert [(r.version, r.window_start, r.n, r.exact, r.cosine) for r in rows] == [
        (None, T0, 1, 0.0, 0.1), (1, T0, 2, 0.5, 0.75), (1, at(60), 1, 1.0, 0.9), (2, at(60), 1, 1.0, 1.0)]
    assert rows[2].to_dict(T0) == {"version": 1, "window_start": at(60).isoformat(), "window_start_s": 60.0,
                                   "n": 1, "exact": 1.0, "cosine": 0.9}


def test_length_series_summary_from_its_histogram() -> None:
    from trainer.evaluate import words_histogram

    histogram = words_histogram([3, 5, 5, 4, 12, 5, 5, 4, 6, 5])
    assert histogram == {"3": 1, "4": 2, "5": 5, "6": 1, "12": 1}
    assert list(histogram) == ["3", "4", "5", "6", "12"]  # shortest first, not in text order
    summary = data.LengthSeries("adapter v1", histogram, "student labels").to_dict()
    assert summary == {"series": "adapter v1", "where": "student labels", "n": 10, "mean_words": 5.4,
                       "median_words": 5, "p90_words": 6, "max_words": 12, "histogram": histogram}
    assert data.LengthSeries("none", {}, "").summary()["mean_words"] is None


def test_sample_mixes_kinds_deterministically() -> None:
    kinds = {f"s{i}": "student" for i in range(50)} | {f"e{i}": "escalated" for i in range(3)} | \
        {f"t{i}": "teacher" for i in range(20)}
    sample = data.choose_sample(kinds, 10)
    assert sample == data.choose_sample(dict(reversed(kinds.items())), 10)  # the input order does not matter
    assert [kinds[s] for s in sample] == ["student"] * 6 + ["escalated"] * 2 + ["teacher"] * 2
    # Without escalations the size is still filled, from any kind.
    no_escalations = {s: k for s, k in kinds.items() if k != "escalated"}
    assert len(data.choose_sample(no_escalations, 10)) == 10
    assert len(data.choose_sample({"a": "student"}, 10)) == 1


def test_clip_lines_marks_what_it_cut() -> None:
    text = "\n".join(f"{i}. click" for i in range(1, 31))
    clipped = data.clip_lines(text, max_lines=5)
    assert clipped.splitlines()[:5] == [f"{i}. click" for i in range(1, 6)]
    assert clipped.endswith("(30 lines in all)")
    assert data.clip_lines("short") == "short"
    assert len(data.clip_lines("x" * 2000, max_chars=100)) < 130


def test_cost_against_teacher_only() -> None:
    cost = data.cost_table(teacher_usd=0.3, student_usd=0.05, teacher_labels=300, student_labels=700,
                           usd_per_gpu_hour=2.0, student_engine_s=90.0)
    assert cost["teacher_per_1k_usd"] == 1.0 and cost["student_per_1k_usd"] == pytest.approx(0.071429, abs=1e-6)
    assert cost["teacher_only_usd"] == 1.0 and cost["actual_usd"] == 0.35 and cost["saved_usd"] == 0.65
    assert cost["savings"] == 0.65 and cost["blended_per_1k_usd"] == 0.35
    # The same savings as the status ledger's formula (labelq.ledger.cost_summary).
    from labelq.ledger import cost_summary

    assert cost_summary(teacher_usd=0.3, teacher_labels=300, student_engine_s=90.0, student_labels=700,
                        usd_per_gpu_hour=2.0).savings == cost["savings"]
    nothing = data.cost_table(teacher_usd=0.0, student_usd=0.0, teacher_labels=0, student_labels=0,
                              usd_per_gpu_hour=2.0, student_engine_s=0.0)
    assert nothing["savings"] is None and nothing["teacher_per_1k_usd"] is None


@pytest.mark.parametrize(("value", "key", "text"), [
    (None, "", "\u2013"), (True, "", "yes"), (12345, "", "12,345"), (0.8472, "exact_match", "84.7%"),
    (0.8472, "cosine", "0.8472"), (120.0, "window_start_s", "120"), (812.34, "", "812.3"),
    (0.000412, "student_per_1k_usd", "0.000412"), (12345.6, "", "12,346"), ({"a": 1, "b": 0.5}, "", "a 1, b 0.5"),
    ([1, 2], "", "1, 2"), ("text", "", "text"),
])
def test_cells_are_formatted_text(value: Any, key: str, text: str) -> None:
    assert page.fmt(value, key) == text


def test_nested_mappings_become_rows_not_reprs() -> None:
    rows = page.kv_rows({"base_model": {"start": 0.0, "end": 1.25}, "labelled": 10, "empty": {}})
    assert rows == [("base model / start", "0"), ("base model / end", "1.25"), ("labelled", "10"),
                    ("empty", "\u2013")]
    table = page.rows_table([{"a": 1, "b": "<x>"}], caption="c")
    assert "<th>a</th>" in table and "&lt;x&gt;" in table and "<caption>c</caption>" in table
    assert "none" in page.rows_table([], caption="Agreement")


def _summary(run_dir: Path) -> dict[str, Any]:
    scores = {"n": 30, "exact_match": 0.8, "cosine": 0.95, "within_contract": 1.0, "mean_words": 5.0,
              "words_histogram": {"4": 10, "5": 10, "6": 10}}
    return {
        "sessions": 600, "ingested": 600, "duplicates": 0, "labelled": 600, "labelled_teacher": 312,
        "labelled_student": 288, "escalated": 12, "dead_lettered": 0, "lost": 0, "in_flight": 0, "audit_ok": True,
        "finished": True, "quality": scores, "quality_all_labels": scores,
        "adapter": {"version": 1, "dataset_version": "v0001", "val": {"base": scores, "adapter": scores}},
        "throughput": {"ingest_sessions_per_s": 812.3, "student_engine_seconds": 30.6},
        "cost": {"teacher_per_1k_usd": 0.1123, "student_per_1k_usd": 0.059, "blended_per_1k_usd": 0.09,
                 "savings": 0.23, "assumption": "student cost: engine seconds x $2.00/GPU-hour"},
        "teacher": "replay (reference labels, priced as the real model)", "student_gpu_usd_per_hour": 2.0,
        "stages": {"ingest": {"start": 3.0, "end": 4.1}}, "elapsed_s": 402.3, "run_dir": str(run_dir),
        "samples": [{"session_id": "s1", "labelled_by": "student", "session": "1. click <button id=buy>",
                     "reference_label": "Buys a lamp", "teacher_label": None, "student_label": "Buys a lamp",
                     "confidence": 0.91, "adapter_version": 1}],
        "label_lengths": {"series": [{"series": "adapter v1", "where": "student labels", "n": 3, "mean_words": 5.0,
                                      "median_words": 5, "p90_words": 6, "max_words": 6,
                                      "histogram": {"4": 1, "5": 1, "6": 1}}]},
        "agreement": {"compared_with": "reference labels", "window_s": 60, "rows": [
            {"version": 1, "window_start": T0.isoformat(), "window_start_s": 0.0, "n": 5, "exact": 0.8,
             "cosine": 0.9}]},
        "throughput_over_time": {"window_s": 60, "rows": [
            {"stage": "student", "window_start_s": 0.0, "labels": 60, "labels_per_s": 1.0}]},
    }


def test_page_has_tables_and_the_sample_but_no_reprs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from labelq.app.report import write_report

    paths = write_report(_summary(tmp_path), tmp_path / "report")
    html = paths["html"].read_text()
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    assert "<script" not in html and "data:image/png;base64," in html
    cells = re.findall(r"<td[^>]*>(.*?)</td>", html, flags=re.S)
    assert cells and not [c for c in cells if re.search(r"\{'|\['|': ", c)], "a dict or list repr in a cell"
    assert "1. click &lt;button id=buy&gt;" in html  # the session rendering, escaped
    assert "Buys a lamp" in html and "84.7%" not in html and "80.0%" in html
    assert "Assumption: student cost: engine seconds x $2.00/GPU-hour" in html
