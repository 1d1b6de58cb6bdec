"""Synthetic web sessions with reference labels (``labelq synth``)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from labelq.synth.builder import SessionBuilder
from labelq.synth.journeys import JOURNEYS
from labelq.synth.vocab import BROWSERS, DEVICES, LOCALES, REFERRERS, SITES

__all__ = ["JOURNEYS", "REFERENCE_FIELD", "generate", "session"]

REFERENCE_FIELD = "_reference"
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def session(rng: random.Random, index: int, seed: int, noise: float = 0.35) -> dict[str, Any]:
    """One session; its reference label is under ``_reference.label``."""
    journey = rng.choice(sorted(JOURNEYS))
    start = _EPOCH + timedelta(seconds=rng.randint(0, 300 * 86_400))
    builder = SessionBuilder(rng, start, noise)
    label = JOURNEYS[journey](builder)
    return {
        "session_id": f"s{seed:x}-{index:08d}",
        "site": rng.choice(SITES),
        "started_at": start.isoformat().replace("+00:00", "Z"),
        "user": {
            "device": rng.choice(DEVICES),
            "locale": rng.choice(LOCALES),
            "browser": rng.choice(BROWSERS),
            "logged_in": rng.random() < 0.6,
        },
        "referrer": rng.choice(REFERRERS),
        "events": builder.events,
        REFERENCE_FIELD: {"label": label, "journey": journey},
    }


def generate(n: int, seed: int = 0, noise: float = 0.35) -> Iterator[dict[str, Any]]:
    """``n`` sessions, the same ones for the same seed."""
    rng = random.Random(seed)
    for index in range(n):
        yield session(rng, index, seed, noise)
