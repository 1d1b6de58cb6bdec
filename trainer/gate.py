"""The promotion gate: a new adapter goes live only when it is good enough and no worse than the one serving. Pure.

Every check is recorded (:class:`GateCheck`: name, value, comparison, threshold, passed, note) in the
adapter's ``metrics.json``; the adapter is promoted when all of them pass:

* ``floor_<metric>``: its val score reaches the floor (``LABELQ_PROMOTE_FLOOR_*``), every version, the
  first one too (exact match, cosine, share within the contract);
* ``golden``: the share of the task's golden cases it passes (``trainer.golden``) reaches
  ``LABELQ_PROMOTE_GOLDEN_MIN_SHARE``; skipped (passed) when the task has no golden set;
* ``serving_<metric>``: its val score is at least the serving adapter's on the same val split, less the
  margin (``LABELQ_PROMOTE_MARGIN_*``); skipped (passed) when no adapter serves, or when the serving one
  was trained on another base (the caller says why in ``no_serving``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trainer.evaluate import EvalScores

GOLDEN_FAILURES_SHOWN = 5  # failed golden cases named in the check's note (the count is always there)


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One test the new adapter had to pass: ``value op threshold``; a skipped check has no value."""

    name: str
    passed: bool
    value: float | None = None
    op: str = ">="
    threshold: float | None = None
    note: str = ""

    def line(self) -> str:
        """One readable line, e.g. ``floor_cosine 0.912 >= 0.850`` or ``golden: skipped (no golden set)``."""
        if self.value is None or self.threshold is None:
            return f"{self.name}: skipped ({self.note})"
        op = self.op if self.passed else {">=": "<"}.get(self.op, f"not {self.op}")
        text = f"{self.name} {self.value:.3f} {op} {self.threshold:.3f}"
        return f"{text} ({self.note})" if self.note else text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Floors:
    exact_match: float
    cosine: float
    within_contract: float


@dataclass(frozen=True, slots=True)
class GoldenOutcome:
    """How the new adapter did on the task's golden cases: ``failures`` are ``"<case>: <why>"``."""

    total: int
    failures: tuple[str, ...]

    @property
    def passed(self) -> int:
        return self.total - len(self.failures)


@dataclass(frozen=True, slots=True)
class GateDecision:
    promote: bool
    why: str
    checks: tuple[GateCheck, ...] = ()


def _metrics(scores: EvalScores) -> list[tuple[str, float]]:
    return [("exact_match", scores.exact_match), ("cosine", scores.cosine),
            ("within_contract", scores.within_contract)]


def _golden_check(golden: GoldenOutcome | None, min_share: float, missing: str) -> GateCheck:
    if golden is None:
        return GateCheck("golden", True, note=missing)
    share = golden.passed / golden.total if golden.total else 1.0
    note = f"{golden.passed}/{golden.total} cases"
    if golden.failures:
        shown = "; ".join(golden.failures[:GOLDEN_FAILURES_SHOWN])
        more = len(golden.failures) - GOLDEN_FAILURES_SHOWN
        note += f"; failed: {shown}" + (f"; {more} more" if more > 0 else "")
    return GateCheck("golden", share >= min_share, round(share, 4), ">=", min_share, note)


def gate(new: EvalScores, current: EvalScores | None, *, floors: Floors, margin_exact: float,
         margin_cosine: float, golden: GoldenOutcome | None = None, golden_min_share: float = 1.0,
         golden_missing: str = "no golden set", no_serving: str = "no adapter serves yet",
         serving_version: int | None = None) -> GateDecision:
    """Promote or not, and why: floors, golden cases, then the serving adapter on the same val set."""
    floor_of = {"exact_match": floors.exact_match, "cosine": floors.cosine,
                "within_contract": floors.within_contract}
    checks = [GateCheck(f"floor_{name}", value >= floor_of[name], value, ">=", floor_of[name])
              for name, value in _metrics(new)]
    checks.append(_golden_check(golden, golden_min_share, golden_missing))
    if current is None:
        checks.append(GateCheck("serving", True, note=no_serving))
    else:
        margin = {"exact_match": margin_exact, "cosine": margin_cosine, "within_contract": margin_exact}
        who = "the serving adapter" if serving_version is None else f"serving v{serving_version}"
        for (name, ours), (_, theirs) in zip(_metrics(new), _metrics(current), strict=True):
            bar = round(theirs - margin[name], 6)
            checks.append(GateCheck(f"serving_{name}", ours >= bar, ours, ">=", bar,
                                    f"{who} {theirs:.3f} - margin {margin[name]:.3f}"))
    failed = [c for c in checks if not c.passed]
    if failed:
        return GateDecision(False, "refused: " + "; ".join(c.line() for c in failed), tuple(checks))
    golden_part = (f"golden {golden.passed}/{golden.total}" if golden is not None else golden_missing)
    serving_part = no_serving if current is None else "no worse than the serving adapter on the same val set"
    return GateDecision(True, f"promoted: every floor reached, {golden_part}, {serving_part}", tuple(checks))
