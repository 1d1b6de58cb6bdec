"""The live-agreement statistics (pure): the drift floors and the rollback's z-test."""

from __future__ import annotations

import math

import pytest

from labelq.contract import normalise_for_match
from labelq.drift import Floors, WindowFigures, degraded_reasons, worse_than, z_test_lower


def figures(n: int, exact: int, within: int | None = None, cosine: float | None = None,
            version: int = 2) -> WindowFigures:
    return WindowFigures(task="t", version=version, window_start=0, n=n, exact=exact,
                         within=n if within is None else within,
                         cosine_sum=0.0 if cosine is None else cosine * n, cosine_n=0 if cosine is None else n)


def test_z_test_matches_the_textbook_value() -> None:
    # 30/100 against 50/100: pooled 0.4, se = sqrt(0.4 * 0.6 * 0.02) = 0.069282, z = 2.8868, p = 0.001946.
    z, p = z_test_lower(30, 100, 50, 100)
    assert z == pytest.approx(0.2 / math.sqrt(0.4 * 0.6 * 0.02))
    assert p == pytest.approx(0.001946, abs=1e-6)
    # One-sided: a better new version is never "worse", whatever the gap.
    z_up, p_up = z_test_lower(50, 100, 30, 100)
    assert z_up == pytest.approx(-z) and p_up == pytest.approx(1 - p)


def test_z_test_without_variance_says_no_difference() -> None:
    assert z_test_lower(0, 50, 0, 80) == (0.0, 1.0)
    assert z_test_lower(50, 50, 80, 80) == (0.0, 1.0)
    with pytest.raises(ValueError):
        z_test_lower(0, 0, 3, 10)


def test_worse_than_needs_both_samples_and_significance() -> None:
    old = figures(200, 100, version=1)
    assert worse_than(figures(99, 0), old, min_samples=100, p_value=0.01) is None  # too few to judge
    small_drop = worse_than(figures(200, 90), old, min_samples=100, p_value=0.01)
    assert small_drop is not None and not small_drop.worse and small_drop.p > 0.01
    big_drop = worse_than(figures(200, 60), old, min_samples=100, p_value=0.01)
    assert big_drop is not None and big_drop.worse and big_drop.p < 0.01
    assert big_drop.to_dict()["current"]["exact_rate"] == 0.3  # type: ignore[index]


def test_floors_mark_degraded_only_with_enough_pairs() -> None:
    floors = Floors(min_samples=50, exact=0.3, cosine=0.7, within=0.9)
    assert degraded_reasons(figures(49, 0, within=0, cosine=0.1), floors) == []
    assert degraded_reasons(figures(100, 40, cosine=0.8), floors) == []
    reasons = degraded_reasons(figures(100, 20, within=80, cosine=0.5), floors)
    assert reasons == ["exact 0.200 < 0.3", "within 0.800 < 0.9", "cosine 0.500 < 0.7"]
    # A floor of 0 is not checked; a cosine over too few embedded pairs is not judged.
    assert degraded_reasons(figures(100, 0), Floors(min_samples=50)) == []
    partly = WindowFigures(task="t", version=1, window_start=0, n=100, exact=50, within=100,
                           cosine_sum=1.0, cosine_n=10)
    assert degraded_reasons(partly, floors) == []


def test_exact_match_normalises_like_the_evaluation() -> None:
    assert normalise_for_match('"Buys a gift card."') == normalise_for_match("buys a GIFT card")
    assert normalise_for_match("Labels with v1") != normalise_for_match("Labels with v2")
