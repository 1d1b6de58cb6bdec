"""The demo report's derived data: pure functions over label records, no I/O.

* time windows: :func:`window_s_for` picks a round window width for a run's
  span, :func:`window_start` places a time in its window;
* throughput per stage (labels per second, per window of ``created_at``);
* agreement per adapter version over time: :class:`AgreementRow` is the one
  shape any source gives (version, window start, n, exact, cosine).
  :func:`reference_agreement` is the demo's source today (student labels
  against the reference labels); another source can replace it through
  :data:`AgreementSource`;
* live agreement (the serving student's shadow labels against the teacher's,
  ``labelq.agreement``): :func:`live_agreement_rows` places its windows on the
  run's clock;
* adapter versions: :func:`adapter_rows`, one row per training report (the
  gate's verdict, val scores, the calibrated threshold with its precision and
  coverage, :func:`point_at`);
* label lengths (words) per series, as histograms with their summary;
* a deterministic sample of sessions for the report's examples;
* cost per 1,000 labels against teacher-only labelling.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.calibration import CurvePoint
    from trainer.reports import TrainingReport

# Window widths the report chooses from (seconds): round numbers a reader takes in at a glance.
ROUND_WINDOWS_S = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


def window_s_for(span_s: float, windows: int = 12) -> int:
    """The smallest round width that cuts ``span_s`` into at most ``windows`` windows."""
    for width in ROUND_WINDOWS_S:
        if span_s / width <= windows:
            return width
    return math.ceil(span_s / windows)


def window_start(when: datetime, origin: datetime, window_s: int) -> float:
    """Seconds from ``origin`` to the start of ``when``'s window."""
    return math.floor((when - origin).total_seconds() / window_s) * window_s


@dataclass(frozen=True, slots=True)
class ThroughputRow:
    stage: str
    window_start_s: float  # seconds from the first label of the run
    labels: int
    labels_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def throughput_rows(created: dict[str, Sequence[datetime]], window_s: int) -> list[ThroughputRow]:
    """Labels per second of each stage in each window (``created``: stage -> when each label was written).

    Windows count from the first label of any stage; a stage's empty windows between its first and last
    label are rows with 0, so a stall shows."""
    times = [t for stage_times in created.values() for t in stage_times]
    if not times:
        return []
    origin = min(times)
    rows: list[ThroughputRow] = []
    for stage, stage_times in created.items():
        if not stage_times:
            continue
        counts = Counter(window_start(t, origin, window_s) for t in stage_times)
        start = min(counts)
        while start <= max(counts):
            rows.append(ThroughputRow(stage, start, counts[start], round(counts[start] / window_s, 2)))
            start += window_s
    return rows


def throughput_by_window(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Throughput rows (``ThroughputRow.to_dict``) as one row per window with a column per stage (labels per
    second; None where the stage wrote nothing in that window's range), windows in order."""
    stages = sorted({r["stage"] for r in rows})
    table: dict[float, dict[str, Any]] = {}
    for r in rows:
        table.setdefault(r["window_start_s"], {"window_start_s": r["window_start_s"], **dict.fromkeys(stages)})[
            r["stage"]] = r["labels_per_s"]
    return [table[start] for start in sorted(table)]


@dataclass(frozen=True, slots=True)
class AgreementRow:
    """Agreement of one adapter version's labels with the labels they are compared to, in one window."""

    version: int | None  # None: the bare base model answered (no adapter yet)
    window_start: datetime
    n: int
    exact: float  # share equal after normalisation
    cosine: float  # mean cosine similarity

    def to_dict(self, origin: datetime | None = None) -> dict[str, Any]:
        return {"version": self.version, "window_start": self.window_start.isoformat(),
                "window_start_s": None if origin is None else (self.window_start - origin).total_seconds(),
                "n": self.n, "exact": self.exact, "cosine": self.cosine}


# A source of agreement rows, sorted by version then window: the demo's is reference_agreement; another
# comparison plugs in with the same shape (live shadow agreement has its own section: live_agreement_rows).
AgreementSource = Callable[[], list[AgreementRow]]


@dataclass(frozen=True, slots=True)
class ScoredLabel:
    """One label scored against its comparison label."""

    version: int | None
    created: datetime
    exact: bool
    cosine: float


def reference_agreement(scored: Iterable[ScoredLabel], origin: datetime, window_s: int) -> list[AgreementRow]:
    """Per adapter version and window of ``created``: how many labels, the share exact, the mean cosine."""
    groups: dict[tuple[int, float], list[ScoredLabel]] = {}
    for label in scored:
        version = -1 if label.version is None else label.version
        groups.setdefault((version, window_start(label.created, origin, window_s)), []).append(label)
    rows = []
    for (version, start), labels in sorted(groups.items()):
        n = len(labels)
        rows.append(AgreementRow(None if version < 0 else version, origin + timedelta(seconds=start), n,
                                 round(sum(s.exact for s in labels) / n, 4),
                                 round(sum(s.cosine for s in labels) / n, 4)))
    return rows


def live_agreement_rows(windows: Iterable[Mapping[str, Any]], origin: datetime | None) -> list[dict[str, Any]]:
    """Live agreement windows (``WindowFigures.to_dict()``: ``window_start`` in unix seconds) as the report
    shows them, by version then window: ``window_start_s`` counts from ``origin`` (the run's first label; None
    without one) and is negative for a window that opened before it (windows are aligned to
    ``agreement_window_s``, not to the run). The report's own rows are accepted again (``rerender``)."""
    rows = []
    for w in windows:
        start = int(w["window_start"])
        rows.append({"version": w.get("version"), "window_start": start,
                     "window_start_s": None if origin is None else round(start - origin.timestamp(), 1),
                     "n": w.get("n", 0), "exact_rate": w.get("exact_rate"), "within_rate": w.get("within_rate"),
                     "cosine": w.get("cosine")})
    return sorted(rows, key=lambda r: (-1 if r["version"] is None else r["version"], r["window_start"]))


def point_at(curve: Sequence[CurvePoint], threshold: float) -> CurvePoint | None:
    """The curve point a threshold selects: the one at that threshold, else the nearest above it (a threshold
    between two points admits the answers of the higher one). None when no point is at or above it."""
    return min((p for p in curve if p.threshold >= threshold), key=lambda p: p.threshold, default=None)


def adapter_rows(reports: Iterable[TrainingReport], student_labels: Mapping[int, int]) -> list[dict[str, Any]]:
    """One row per adapter version, in the given order: what the gate decided and why, the val scores, the
    students' confidence threshold (None in reports written before calibration was kept) with the precision
    and coverage on the val split at it, and ``student_labels[version]``: the labels it wrote in this run.
    ``curve`` is there for the plot (a list of threshold, precision, coverage)."""
    rows = []
    for report in reports:
        calibration = report.calibration
        point = None if calibration is None else point_at(calibration.curve, calibration.threshold)
        rows.append({
            "version": report.version, "dataset_version": report.dataset_version, "promoted": report.promoted,
            "gate": report.gate, "val_n": report.adapter.n, "val_exact_match": report.adapter.exact_match,
            "val_cosine": report.adapter.cosine, "val_within_contract": report.adapter.within_contract,
            "calibrated": None if calibration is None else calibration.calibrated,
            "threshold": None if calibration is None else calibration.threshold,
            "target_precision": None if calibration is None else calibration.target_precision,
            "precision": None if point is None else point.precision,
            "coverage": None if point is None else point.coverage,
            "calibration_why": None if calibration is None else calibration.why,
            "curve": [] if calibration is None else [
                {"threshold": p.threshold, "precision": p.precision, "coverage": p.coverage}
                for p in calibration.curve],
            "student_labels": student_labels.get(report.version, 0),
            "seconds": report.seconds,
        })
    return rows


@dataclass(frozen=True, slots=True)
class LengthSeries:
    """Label lengths (words) of one series: a model's answers, or the reference labels."""

    name: str
    histogram: dict[str, int]  # words (as text: a JSON key) -> labels
    where: str  # what these labels are: the val split, production labels, ...

    def summary(self) -> dict[str, Any]:
        """n, mean, median and 90th percentile words, and the longest."""
        lengths = sorted(int(w) for w, count in self.histogram.items() for _ in range(count))
        if not lengths:
            return {"series": self.name, "where": self.where, "n": 0, "mean_words": None, "median_words": None,
                    "p90_words": None, "max_words": None}
        return {"series": self.name, "where": self.where, "n": len(lengths),
                "mean_words": round(sum(lengths) / len(lengths), 2), "median_words": _quantile(lengths, 0.5),
                "p90_words": _quantile(lengths, 0.9), "max_words": lengths[-1]}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "histogram": self.histogram}


def _quantile(ordered: Sequence[int], q: float) -> int:
    """The nearest-rank quantile of an ordered, non-empty sequence."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def sample_order(session_id: str, seed: str = "report") -> str:
    """A stable, well-mixed order of sessions (the same sample on every rendering of a run)."""
    return hashlib.sha256(f"{seed}:{session_id}".encode()).hexdigest()


def choose_sample(kinds: dict[str, str], size: int = 10, quotas: dict[str, int] | None = None) -> list[str]:
    """``size`` session ids, a deterministic mix of kinds (``kinds``: session id -> kind).

    Each kind gets its quota first (``quotas``, default: student 6, escalated 2, teacher 2); the rest of the
    size is filled from any kind, in the same hash order; the result is in that order, grouped by kind."""
    quotas = quotas if quotas is not None else {"student": 6, "escalated": 2, "teacher": 2}
    ordered = sorted(kinds, key=sample_order)
    chosen: list[str] = []
    for kind, quota in quotas.items():
        chosen += [s for s in ordered if kinds[s] == kind][:quota]
    chosen = chosen[:size]
    chosen += [s for s in ordered if s not in set(chosen)][:size - len(chosen)]
    rank = {kind: i for i, kind in enumerate(quotas)}
    return sorted(chosen, key=lambda s: (rank.get(kinds[s], len(rank)), sample_order(s)))


def clip_lines(text: str, max_lines: int = 10, max_chars: int = 700) -> str:
    """The start of a rendering: at most ``max_lines`` lines and ``max_chars`` characters, marked when cut."""
    lines = text.splitlines()
    kept = "\n".join(lines[:max_lines])
    cut = len(lines) > max_lines
    if len(kept) > max_chars:
        kept, cut = kept[: max_chars - 1].rstrip(), True
    return kept + (f"\n… ({len(lines)} lines in all)" if cut else "")


def cost_table(*, teacher_usd: float, student_usd: float, teacher_labels: int, student_labels: int,
               usd_per_gpu_hour: float, student_engine_s: float) -> dict[str, Any]:
    """What the run cost against labelling every session with the teacher, at the teacher's own price per label.

    ``student_usd`` is an estimate: engine seconds x ``usd_per_gpu_hour`` (a setting, not a bill)."""
    labels = teacher_labels + student_labels
    teacher_per_1k = teacher_usd / teacher_labels * 1000 if teacher_labels else None
    student_per_1k = student_usd / student_labels * 1000 if student_labels else None
    actual = teacher_usd + student_usd
    teacher_only = None if teacher_per_1k is None else teacher_per_1k * labels / 1000
    return {
        "labels": labels,
        "teacher_labels": teacher_labels,
        "student_labels": student_labels,
        "teacher_per_1k_usd": None if teacher_per_1k is None else round(teacher_per_1k, 4),
        "student_per_1k_usd": None if student_per_1k is None else round(student_per_1k, 6),
        "blended_per_1k_usd": round(actual / labels * 1000, 6) if labels else None,
        "actual_usd": round(actual, 6),
        "teacher_only_usd": None if teacher_only is None else round(teacher_only, 6),
        "saved_usd": None if teacher_only is None else round(teacher_only - actual, 6),
        "savings": round(1 - actual / teacher_only, 4) if teacher_only else None,
        "student_engine_s": round(student_engine_s, 1),
        "student_gpu_usd_per_hour": usd_per_gpu_hour,
    }
