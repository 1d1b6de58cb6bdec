"""The demo report's pure parts: windows, throughput, agreement, label lengths, the sample, cost, cell formatting,
and the page written from a summary (no dict or list reprs in it, the session rendering escaped)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
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


def _training_report(version: int, promoted: bool, calibration: Any, gate: str) -> Any:
    from trainer.evaluate import EvalScores
    from trainer.lora import TrainStats
    from trainer.reports import TrainingReport

    scores = EvalScores(n=40, exact_match=0.75, cosine=0.93, within_contract=0.975, mean_words=5.2)
    return TrainingReport(
        task="session-label", version=version, dataset_version=f"v000{version}", prompt_version="p1",
        base_model="tiny", train=TrainStats(steps=12, final_loss=0.4, train_seconds=3.2, device="cpu",
                                            dtype="float32", examples=180, qlora=False),
        base=EvalScores.empty(), adapter=scores, serving=None, promoted=promoted, gate=gate,
        created_at="2026-11-30T12:00:00.000+00:00", seconds=41.5 + version, calibration=calibration)


CURVE_POINTS = ((0.95, 1.0, 0.25), (0.8, 0.95, 0.5), (0.6, 0.9, 0.75), (0.3, 0.8, 1.0))  # threshold, precision, coverage
REFUSED = ("refused: floor_exact_match 0.412 < 0.500; floor_cosine 0.801 < 0.850; serving_exact_match 0.412 < "
           "0.700 (serving v1 0.750 - margin 0.050); serving_cosine 0.801 < 0.910 (serving v1 0.930 - margin 0.020)")


def _calibration(calibrated: bool, threshold: float) -> Any:
    from trainer.calibration import Calibration, CurvePoint

    why = "lowest threshold whose answers reach precision 0.900" if calibrated else \
        "no threshold reaches precision 0.990 (best 1.000 at 0.9500): the fixed threshold applies"
    return Calibration(calibrated, threshold, 0.9 if calibrated else 0.99, why, 40,
                       tuple(CurvePoint(*p) for p in CURVE_POINTS))


def test_point_at_the_chosen_threshold_or_the_nearest_above() -> None:
    from trainer.calibration import CurvePoint

    curve = [CurvePoint(*p) for p in CURVE_POINTS]
    assert data.point_at(curve, 0.6) == CurvePoint(0.6, 0.9, 0.75)
    assert data.point_at(curve, 0.7) == CurvePoint(0.8, 0.95, 0.5)  # between points: the answers of the higher
    assert data.point_at(curve, 0.1) == CurvePoint(0.3, 0.8, 1.0)
    assert data.point_at(curve, 0.99) is None and data.point_at([], 0.5) is None


def test_adapter_rows_one_per_version_with_gate_calibration_and_labels() -> None:
    reports = [_training_report(1, True, _calibration(True, 0.6), "promoted: every floor reached"),
               _training_report(2, False, _calibration(False, 0.7), REFUSED),
               _training_report(3, True, None, "promoted: an older report")]
    rows = data.adapter_rows(reports, {1: 250, 2: 0})
    first, refused, older = rows
    assert {k: v for k, v in first.items() if k != "curve"} == {
        "version": 1, "dataset_version": "v0001", "promoted": True, "gate": "promoted: every floor reached",
        "val_n": 40, "val_exact_match": 0.75, "val_cosine": 0.93, "val_within_contract": 0.975, "calibrated": True,
        "threshold": 0.6, "target_precision": 0.9, "precision": 0.9, "coverage": 0.75,
        "calibration_why": "lowest threshold whose answers reach precision 0.900", "student_labels": 250,
        "seconds": 42.5}
    assert first["curve"][1] == {"threshold": 0.8, "precision": 0.95, "coverage": 0.5}
    # Not calibrated: the fixed threshold, and what the val answers do at it (the nearest point above).
    assert (refused["promoted"], refused["calibrated"], refused["threshold"], refused["precision"],
            refused["coverage"], refused["gate"]) == (False, False, 0.7, 0.95, 0.5, REFUSED)
    assert (older["calibrated"], older["threshold"], older["precision"], older["curve"],
            older["student_labels"]) == (None, None, None, [], 0)
    assert orjson.loads(orjson.dumps(rows)) == rows


def test_live_agreement_rows_on_the_runs_clock() -> None:
    from labelq.drift import WindowFigures

    start = int(T0.timestamp())
    windows = [WindowFigures("session-label", 2, start + 60, n=4, exact=3, within=4, cosine_sum=3.6,
                             cosine_n=4).to_dict(),
               WindowFigures("session-label", 1, start - 30, n=2, exact=1, within=2).to_dict(),
               WindowFigures("session-label", 1, start + 60, n=0).to_dict()]
    rows = data.live_agreement_rows(windows, at(10))
    assert rows == [
        {"version": 1, "window_start": start - 30, "window_start_s": -40.0, "n": 2, "exact_rate": 0.5,
         "within_rate": 1.0, "cosine": None},
        {"version": 1, "window_start": start + 60, "window_start_s": 50.0, "n": 0, "exact_rate": None,
         "within_rate": None, "cosine": None},
        {"version": 2, "window_start": start + 60, "window_start_s": 50.0, "n": 4, "exact_rate": 0.75,
         "within_rate": 1.0, "cosine": 0.9}]
    assert data.live_agreement_rows(rows, at(10)) == rows  # the report's own rows read again (rerender)
    assert [r["window_start_s"] for r in data.live_agreement_rows(windows, None)] == [None, None, None]
    assert data.live_agreement_rows([], at(0)) == []


def test_rerender_reads_the_live_agreement_file_else_keeps_the_reports_rows(tmp_path: Path) -> None:
    from labelq.app.report import LIVE_AGREEMENT_FILE, _live_windows

    kept = {"live_agreement": {"window_s": 60, "rows": [{"version": 1, "window_start": 100, "n": 3}]}}
    assert _live_windows(tmp_path, kept) == kept["live_agreement"]["rows"]
    assert _live_windows(tmp_path, {}) == []
    (tmp_path / LIVE_AGREEMENT_FILE).write_bytes(b"not json")
    assert _live_windows(tmp_path, kept) == kept["live_agreement"]["rows"]
    fresh = [{"task": "session-label", "version": 2, "window_start": 160, "n": 5, "exact": 5, "within": 5,
              "cosine_n": 0, "exact_rate": 1.0, "within_rate": 1.0, "cosine": None}]
    (tmp_path / LIVE_AGREEMENT_FILE).write_bytes(orjson.dumps(fresh))
    assert _live_windows(tmp_path, kept) == fresh


def _cells(html: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", html, flags=re.S)


def _text(cell: str) -> str:
    """A cell's text, without the markup of a tooltip."""
    return re.sub(r"<[^>]+>", "", cell)


def test_page_shows_adapter_versions_live_agreement_and_calibration(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from labelq.app.report import write_report
    from labelq.drift import WindowFigures

    reports = [_training_report(1, True, _calibration(True, 0.6), "promoted: every floor reached"),
               _training_report(2, False, _calibration(False, 0.7), REFUSED)]
    start = int(T0.timestamp())
    windows = [WindowFigures("session-label", 1, start, n=8, exact=6, within=8, cosine_sum=7.2, cosine_n=8),
               WindowFigures("session-label", 1, start + 60, n=5, exact=4, within=5)]
    summary = {**_summary(tmp_path), "adapters": data.adapter_rows(reports, {1: 288}),
               "live_agreement": {"window_s": 60, "rows": data.live_agreement_rows(
                   [w.to_dict() for w in windows], T0)}}
    orjson.dumps(summary)  # stays JSON
    paths = write_report(summary, tmp_path / "report")
    html = paths["html"].read_text()
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    cells = _cells(html)
    assert cells and not [c for c in cells if re.search(r"\{'|\['|': ", c)], "a dict or list repr in a cell"
    adapters = html[html.index("<caption>Adapter versions</caption>"):]
    adapters = adapters[:adapters.index("</table>")]
    rows = [_cells(row) for row in re.findall(r"<tr>(.*?)</tr>", adapters, flags=re.S)[1:]]
    assert [r[:3] for r in rows] == [["v1", "v0001", "yes"], ["v2", "v0002", "no"]]
    assert [_text(c) for c in rows[0][4:]] == ["75.0%", "0.93", "97.5%", "yes", "0.6", "90.0%", "75.0%", "288",
                                               "42.5"]
    assert [_text(c) for c in rows[1][7:]] == ["no", "0.7", "95.0%", "50.0%", "0", "43.5"]
    assert "title='no threshold reaches precision 0.990 (best 1.000 at 0.9500): the fixed threshold applies'" \
        in rows[1][7]  # why not calibrated, on hover
    # The long reason is cut in its cell, whole in the tooltip.
    assert _text(rows[1][3]).endswith("\u2026") and len(_text(rows[1][3])) < 155
    assert "serving_cosine 0.801 &lt; 0.910 (serving v1 0.930 - margin 0.020)'>" in rows[1][3]
    live = html[html.index("<caption>Live agreement: student shadow labels against the teacher&#x27;s"):]
    live = live[:live.index("</table>")]
    assert "(60 s windows)" in live
    assert [_cells(row) for row in re.findall(r"<tr>(.*?)</tr>", live, flags=re.S)[1:]] == [
        ["v1", "0", "8", "75.0%", "100.0%", "0.9"], ["v1", "60", "5", "80.0%", "100.0%", "\u2013"]]
    assert "never as labels" in html


def test_page_without_training_reports_or_live_rows_says_why(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from labelq.app.report import write_report

    summary = {**_summary(tmp_path), "adapters": [], "live_agreement": {"window_s": 3600, "rows": []}}
    html = write_report(summary, tmp_path / "empty")["html"].read_text()
    assert "Adapter versions: none." in html and "No training report in the run's store" in html
    assert "per adapter version (3,600 s windows): none." in html
    assert "no sampled session was labelled while an adapter served" in html
    # A report.json from before these sections renders too (the same notes).
    older = write_report(_summary(tmp_path), tmp_path / "older")["html"].read_text()
    assert "Adapter versions: none." in older


def test_adapter_rows_from_the_stores_training_reports(tmp_path: Path) -> None:
    """The metrics files as the trainer writes them, read back in version order (calibration curve included);
    a file that is not a training report is left out."""
    from labelq import keyspace
    from labelq.app.report import TASK, _training_reports
    from labelq.keyspace import AdapterFile
    from labelq.store import LocalStore

    store = LocalStore(tmp_path / "store")
    reports = {10: _training_report(10, False, _calibration(False, 0.7), REFUSED),
               2: _training_report(2, True, _calibration(True, 0.6), "promoted: every floor reached")}
    for version, report in reports.items():
        store.put_bytes(keyspace.adapter_file(TASK, version, AdapterFile.METRICS), orjson.dumps(report.to_dict()))
    store.put_bytes(keyspace.adapter_file(TASK, 3, AdapterFile.METRICS), b"[1, 2]")
    found = _training_reports(store)
    assert list(found) == [2, 10] and found[2] == reports[2]
    rows = data.adapter_rows(found.values(), {2: 7})
    assert [(r["version"], r["promoted"], r["precision"], r["student_labels"]) for r in rows] == [
        (2, True, 0.9, 7), (10, False, 0.95, 0)]
