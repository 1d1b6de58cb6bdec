"""Calibrated escalation: the confidence threshold an adapter's students use, chosen on its val split. Pure.

Each val answer of the new adapter has a confidence (the geometric mean probability of its tokens, end of
answer included: ``labelq.engines.base.mean_prob``, what every student backend reports) and is right or
not (:data:`RIGHT`). The threshold is the lowest confidence ``t`` seen such that the answers at or above
``t`` are right at least ``target_precision`` of the time (students escalate answers below it). When no
``t`` reaches the target, or the val split has fewer than :data:`MIN_ANSWERS` answers, the adapter is not
calibrated: its students use ``LABELQ_STUDENT_CONFIDENCE_THRESHOLD``, and ``why`` says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

RIGHT = "within the output contract and equal to the reference after normalisation (exact match)"
MIN_ANSWERS = 20  # fewer val answers than this calibrate nothing but noise
CURVE_POINTS = 21  # points of the precision/coverage curve kept in metrics.json (plus the chosen one)


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """Answers with confidence >= ``threshold``: ``precision`` of them right, ``coverage`` of all answers."""

    threshold: float
    precision: float
    coverage: float


@dataclass(frozen=True, slots=True)
class Calibration:
    calibrated: bool  # False: students use LABELQ_STUDENT_CONFIDENCE_THRESHOLD, see why
    threshold: float  # the chosen threshold, or the setting's when not calibrated
    target_precision: float
    why: str
    answers: int  # val answers with a confidence
    curve: tuple[CurvePoint, ...] = ()
    right: str = RIGHT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _floor4(value: float) -> float:
    """Rounded down, so the answer the threshold was chosen at is still at or above the recorded value."""
    return math.floor(value * 10_000) / 10_000


def calibrate(confidences: Sequence[float | None], right: Sequence[bool], *, target_precision: float,
              fallback: float) -> Calibration:
    """The lowest threshold whose answers at or above it reach ``target_precision``, with the curve."""
    pairs = sorted(((c, r) for c, r in zip(confidences, right, strict=True) if c is not None),
                   key=lambda p: -p[0])
    n = len(pairs)
    if n < MIN_ANSWERS:
        return Calibration(False, fallback, target_precision,
                           f"{n} val answers with a confidence, fewer than {MIN_ANSWERS}: the fixed threshold "
                           "applies", n)
    points: list[CurvePoint] = []
    hits = 0
    for i, (confidence, ok) in enumerate(pairs):
        hits += ok
        if i + 1 < n and pairs[i + 1][0] == confidence:
            continue  # a threshold at this confidence admits every answer that has it
        points.append(CurvePoint(_floor4(confidence), round(hits / (i + 1), 4), round((i + 1) / n, 4)))
    reaching = [i for i, p in enumerate(points) if p.precision >= target_precision]
    keep = {round(k * (len(points) - 1) / (CURVE_POINTS - 1)) for k in range(CURVE_POINTS)}
    if not reaching:
        best = max(points, key=lambda p: (p.precision, p.coverage))
        curve = tuple(p for i, p in enumerate(points) if i in keep)
        return Calibration(False, fallback, target_precision,
                           f"no threshold reaches precision {target_precision:.3f} (best {best.precision:.3f} at "
                           f"{best.threshold:.4f}): the fixed threshold applies", n, curve)
    chosen = reaching[-1]  # points run from the highest confidence down: the last one is the lowest threshold
    point = points[chosen]
    curve = tuple(p for i, p in enumerate(points) if i in keep | {chosen})
    return Calibration(True, point.threshold, target_precision,
                       f"lowest threshold whose answers reach precision {target_precision:.3f}: "
                       f"{point.precision:.3f} on {point.coverage:.1%} of val answers", n, curve)
