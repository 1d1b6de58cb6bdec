"""Threshold selection for calibrated escalation (trainer/calibration.py): pure, on synthetic confidences."""

from __future__ import annotations

import pytest

from trainer.calibration import CURVE_POINTS, MIN_ANSWERS, calibrate


def test_the_lowest_threshold_reaching_the_target_precision_is_chosen() -> None:
    # 20 answers, most confident first: the first 10 right, then right/wrong alternating.
    confidences = [0.99 - i * 0.04 for i in range(20)]
    right = [True] * 10 + [i % 2 == 0 for i in range(10)]
    cal = calibrate(confidences, right, target_precision=0.8, fallback=0.5)
    # At the 15th answer (0.43): 13/15 right = 0.867; at the 16th: 13/16 = 0.8125; 17th: 14/17 = 0.82;
    # 18th: 14/18 = 0.78; 19th: 15/19 = 0.789; 20th: 15/20 = 0.75. The lowest reaching 0.8 is the 17th.
    assert cal.calibrated and cal.threshold == pytest.approx(0.99 - 16 * 0.04, abs=1e-4)
    assert cal.threshold <= confidences[16]  # rounded down: the answer it was chosen at still passes
    chosen = next(p for p in cal.curve if p.threshold == cal.threshold)
    assert chosen.precision == round(14 / 17, 4) and chosen.coverage == round(17 / 20, 4)
    assert cal.curve[0].coverage == 0.05 and cal.curve[-1].coverage == 1.0
    assert "0.800" in cal.why and cal.answers == 20


def test_everything_right_means_the_lowest_confidence_seen() -> None:
    confidences = [0.2 + i / 100 for i in range(30)]
    cal = calibrate(confidences, [True] * 30, target_precision=0.9, fallback=0.5)
    assert cal.calibrated and cal.threshold == 0.2 and cal.curve[-1].coverage == 1.0


def test_ties_are_admitted_together() -> None:
    confidences = [0.9] * 10 + [0.6] * 10  # the 0.6 group is half wrong
    right = [True] * 10 + [True, False] * 5
    cal = calibrate(confidences, right, target_precision=0.75, fallback=0.5)
    assert cal.threshold == 0.6 and [p.coverage for p in cal.curve] == [0.5, 1.0]
    strict = calibrate(confidences, right, target_precision=0.8, fallback=0.5)
    assert strict.threshold == 0.9 and strict.calibrated


def test_no_threshold_reaching_the_target_falls_back_and_says_why() -> None:
    confidences = [1 - i / 40 for i in range(40)]
    cal = calibrate(confidences, [i % 2 == 1 for i in range(40)], target_precision=0.9, fallback=0.5)
    assert not cal.calibrated and cal.threshold == 0.5
    assert "no threshold reaches precision 0.900" in cal.why and "best 0.500" in cal.why
    assert 0 < len(cal.curve) <= CURVE_POINTS


def test_too_few_answers_fall_back_and_answers_without_confidence_are_left_out() -> None:
    cal = calibrate([0.9] * (MIN_ANSWERS - 1) + [None] * 5, [True] * (MIN_ANSWERS + 4),
                    target_precision=0.9, fallback=0.42)
    assert not cal.calibrated and cal.threshold == 0.42 and cal.answers == MIN_ANSWERS - 1
    assert f"fewer than {MIN_ANSWERS}" in cal.why and cal.curve == ()


def test_a_long_curve_is_thinned_but_keeps_the_chosen_point() -> None:
    confidences = [1 - i / 1000 for i in range(500)]
    right = [i < 100 or i % 7 != 0 for i in range(500)]
    cal = calibrate(confidences, right, target_precision=0.97, fallback=0.5)
    assert cal.calibrated and len(cal.curve) <= CURVE_POINTS + 1
    assert any(p.threshold == cal.threshold for p in cal.curve)
    assert [p.threshold for p in cal.curve] == sorted((p.threshold for p in cal.curve), reverse=True)
