"""The promotion gate: a new adapter goes live only when it is no worse than the one serving. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.evaluate import EvalScores


@dataclass(frozen=True, slots=True)
class GateDecision:
    promote: bool
    why: str


def gate(new: EvalScores, current: EvalScores | None, *, margin_exact: float,
         margin_cosine: float) -> GateDecision:
    """Promote or not, and why: compare on the same val set; no serving adapter means promote."""
    if current is None:
        return GateDecision(True, "no adapter serves yet")
    checks = [  # (metric, new, current, allowed regression)
        ("exact_match", new.exact_match, current.exact_match, margin_exact),
        ("cosine", new.cosine, current.cosine, margin_cosine),
        ("within_contract", new.within_contract, current.within_contract, margin_exact),
    ]
    worse = [(name, ours, theirs) for name, ours, theirs, margin in checks if not ours >= theirs - margin]
    if worse:
        detail = ", ".join(f"{n} {ours:.3f} < {theirs:.3f}" for n, ours, theirs in worse)
        return GateDecision(False, f"worse than the serving adapter: {detail}")
    return GateDecision(True, "no worse than the serving adapter on the same val set")
