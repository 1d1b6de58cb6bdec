"""The demo's plan: the settings that make its loop turn within minutes, and its ingest waves.

Pure functions of settings and counts (no Redis, no processes): :mod:`labelq.app.demo` runs them.
"""

from __future__ import annotations

import itertools

from labelq.models import TINY, base_kind
from labelq.settings import Settings


def demo_teacher_backend(base: Settings) -> str:
    """replay, chosen by the demo, unless LABELQ_TEACHER_BACKEND (or the config file) chose one."""
    return base.teacher_backend if "teacher_backend" in base.model_fields_set else "replay"


# What the demo changes so the loop turns within minutes (a setting set on purpose is kept): a larger teacher
# sample (more shadow pairs), agreement in minute windows, and a retrain every 3% of the sessions after the
# seed set (production: every 1,000 new teacher labels).
DEMO_SAMPLE_RATE = 0.05
DEMO_AGREEMENT_WINDOW_S = 60
DEMO_RETRAIN_SHARE = 0.03


def demo_settings(base: Settings, run_id: str) -> Settings:
    run_dir = base.state_dir / "runs" / run_id
    return base.model_copy(update={
        "teacher_backend": demo_teacher_backend(base),
        "redis_key_prefix": f"{base.redis_key_prefix}demo-{run_id}:",
        "store_url": base.store_url or f"file://{run_dir / 'store'}",
        "trainer_poll_s": 2.0,
        "student_wait_s": 2.0,
        **{k: v for k, v in (("routing_sample_rate", DEMO_SAMPLE_RATE),
                             ("agreement_window_s", DEMO_AGREEMENT_WINDOW_S)) if k not in base.model_fields_set},
    })


# On a real pretrained base (SmolLM2-135M on 2 CPU cores: ~6.6 s a LoRA step of 8 sequences, ~3.4 s a label)
# the demo's seed set is 128 teacher labels instead of the 300 production starts from, trained for 6 epochs
# instead of the real-base default 3 (78 steps, 518 s measured): 64 labels for 3 epochs (21 steps) gave an
# adapter the gate refused (exact 0.27, cosine 0.78). docs/benchmarks.md has both runs.
DEMO_REAL_BASE = {"curation_seed_size": 128, "trainer_epochs": 6}


def loop_settings(settings: Settings, sessions: int) -> Settings:
    """The demo run's seed set and epochs on a real base and its retrain trigger (see above; the sample rate
    and window are in :func:`demo_settings`), each unless set already."""
    update: dict[str, int] = {}
    if base_kind(settings.student_model) != TINY:  # the tiny base by name or by path keeps the tiny settings
        update.update({k: v for k, v in DEMO_REAL_BASE.items() if k not in settings.model_fields_set})
    if "curation_retrain_every" not in settings.model_fields_set:
        after_seed = max(0, sessions - update.get("curation_seed_size", settings.curation_seed_size))
        update["curation_retrain_every"] = max(10, int(after_seed * DEMO_RETRAIN_SHARE))
    return settings.model_copy(update=update)


def wave_bounds(sessions: int, seed_size: int, waves: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each ingest wave: the first is the seed set and an equal share of the rest."""
    seed_end, after_seed = min(sessions, seed_size), max(0, sessions - seed_size)
    waves = max(1, min(waves, after_seed or 1))
    edges = [0] + [seed_end + after_seed * (i + 1) // waves for i in range(waves)]
    return list(itertools.pairwise(edges))
