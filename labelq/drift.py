"""Judging live agreement (pure): the drift alarm's floors and the rollback's significance test.

A window's figures (:class:`WindowFigures`) are the counts the agreement
monitor keeps per adapter version and window (``labelq.agreement``): pairs of
the teacher's label and the serving student's shadow label of one sampled
session.

* **Drift alarm** (:func:`degraded_reasons`): a window with at least
  ``min_samples`` pairs whose exact agreement, mean cosine or share within the
  output contract is below its floor (a floor of 0 is not checked; cosine
  only once ``min_samples`` pairs are embedded) marks the task degraded.
* **Rollback** (:func:`worse_than`): the current version's exact-match count
  against its predecessor's, by a one-sided two-proportion z-test (pooled
  variance): H0 the two rates are equal, H1 the current one is lower. The
  version is worse when both windows have ``min_samples`` pairs and
  p < ``p_value``. Exact match is a count of successes, which is what the test
  needs; cosine is a mean of bounded scores and is left to the floors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """One adapter version's agreement in one window."""

    task: str
    version: int
    window_start: int  # unix time
    n: int = 0
    exact: int = 0
    within: int = 0
    cosine_sum: float = 0.0
    cosine_n: int = 0

    @property
    def exact_rate(self) -> float | None:
        return self.exact / self.n if self.n else None

    @property
    def within_rate(self) -> float | None:
        return self.within / self.n if self.n else None

    @property
    def cosine(self) -> float | None:
        return self.cosine_sum / self.cosine_n if self.cosine_n else None

    def to_dict(self) -> dict[str, object]:
        rounded = {name: None if value is None else round(value, 4)
                   for name, value in (("exact_rate", self.exact_rate), ("within_rate", self.within_rate),
                                       ("cosine", self.cosine))}
        return {"task": self.task, "version": self.version, "window_start": self.window_start, "n": self.n,
                "exact": self.exact, "within": self.within, "cosine_n": self.cosine_n, **rounded}


@dataclass(frozen=True, slots=True)
class Floors:
    """The drift alarm's settings: the least pairs a window needs, and a floor per figure (0: unchecked)."""

    min_samples: int
    exact: float = 0.0
    cosine: float = 0.0
    within: float = 0.0


def degraded_reasons(figures: WindowFigures, floors: Floors) -> list[str]:
    """What is below its floor in ``figures`` (empty: healthy, or too few pairs to judge)."""
    if figures.n < floors.min_samples:
        return []
    reasons = []
    exact, within, cosine = figures.exact_rate, figures.within_rate, figures.cosine
    if floors.exact > 0 and exact is not None and exact < floors.exact:
        reasons.append(f"exact {exact:.3f} < {floors.exact}")
    if floors.within > 0 and within is not None and within < floors.within:
        reasons.append(f"within {within:.3f} < {floors.within}")
    if floors.cosine > 0 and cosine is not None and figures.cosine_n >= floors.min_samples and cosine < floors.cosine:
        reasons.append(f"cosine {cosine:.3f} < {floors.cosine}")
    return reasons


def z_test_lower(successes_new: int, n_new: int, successes_old: int, n_old: int) -> tuple[float, float]:
    """One-sided two-proportion z-test that the new rate is lower than the old one: ``(z, p)``, with
    ``z = (p_old - p_new) / sqrt(p(1 - p)(1/n_old + 1/n_new))`` and ``p`` the pooled rate; the p-value is
    ``P(Z >= z)``. Equal rates at 0 or 1 (no variance) give ``(0.0, 1.0)``."""
    if n_new <= 0 or n_old <= 0:
        raise ValueError("both samples need at least one pair")
    rate_new, rate_old = successes_new / n_new, successes_old / n_old
    pooled = (successes_new + successes_old) / (n_new + n_old)
    variance = pooled * (1 - pooled) * (1 / n_old + 1 / n_new)
    if variance <= 0:
        return 0.0, 1.0
    z = (rate_old - rate_new) / math.sqrt(variance)
    return z, 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True, slots=True)
class Comparison:
    """The rollback's verdict on a version against its predecessor."""

    worse: bool
    z: float
    p: float
    current: WindowFigures
    predecessor: WindowFigures

    def to_dict(self) -> dict[str, object]:
        return {"worse": self.worse, "z": round(self.z, 3), "p": float(f"{self.p:.3g}"),
                "current": self.current.to_dict(), "predecessor": self.predecessor.to_dict()}


def worse_than(current: WindowFigures, predecessor: WindowFigures, *, min_samples: int,
               p_value: float) -> Comparison | None:
    """Whether ``current``'s exact agreement is significantly lower than ``predecessor``'s; None when
    either window has fewer than ``min_samples`` pairs (nothing is judged)."""
    if current.n < min_samples or predecessor.n < min_samples:
        return None
    z, p = z_test_lower(current.exact, current.n, predecessor.exact, predecessor.n)
    return Comparison(worse=p < p_value, z=z, p=p, current=current, predecessor=predecessor)
