"""The promotion gate: a new adapter goes live only when it is no worse than the one serving. Pure."""

from __future__ import annotations

from typing import Any


def gate(new: dict[str, Any], current: dict[str, Any] | None, *, margin_exact: float,
         margin_cosine: float) -> tuple[bool, str]:
    """``(promote, why)``: compare on the same val set; no serving adapter means promote."""
    if current is None:
        return True, "no adapter serves yet"
    checks = [
        ("exact_match", new["exact_match"] >= current["exact_match"] - margin_exact),
        ("cosine", new["cosine"] >= current["cosine"] - margin_cosine),
        ("within_contract", new["within_contract"] >= current["within_contract"] - margin_exact),
    ]
    worse = [name for name, ok in checks if not ok]
    if worse:
        detail = ", ".join(f"{n} {new[n]:.3f} < {current[n]:.3f}" for n in worse)
        return False, f"worse than the serving adapter: {detail}"
    return True, "no worse than the serving adapter on the same val set"
