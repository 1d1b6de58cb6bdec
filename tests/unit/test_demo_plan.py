"""The demo's plan: its ingest waves and the settings that make its loop turn within minutes."""

from __future__ import annotations

import json
from pathlib import Path

from labelq.app.demo import WORKER_SETTINGS, worker_env
from labelq.app.demo_plan import (
    DEMO_AGREEMENT_WINDOW_S,
    DEMO_REAL_BASE,
    DEMO_SAMPLE_RATE,
    demo_settings,
    loop_settings,
    wave_bounds,
)
from labelq.models import MANIFEST
from labelq.settings import Settings


def test_the_first_wave_holds_the_seed_set_and_the_waves_cover_every_session_once() -> None:
    bounds = wave_bounds(5000, 300, 4)
    assert bounds == [(0, 1475), (1475, 2650), (2650, 3825), (3825, 5000)]
    assert wave_bounds(400, 120, 4) == [(0, 190), (190, 260), (260, 330), (330, 400)]
    for sessions, seed, waves in ((50, 300, 4), (301, 300, 4), (7, 0, 3), (1000, 300, 1)):
        got = wave_bounds(sessions, seed, waves)
        covered = [i for lo, hi in got for i in range(lo, hi)]
        assert covered == list(range(sessions)) and got[0][1] >= min(sessions, seed)
        assert all(lo < hi for lo, hi in got)


def test_the_demo_turns_the_loop_faster_but_keeps_what_was_set_on_purpose(tmp_path: Path) -> None:
    base = Settings(state_dir=tmp_path)
    run = loop_settings(demo_settings(base, "r1"), 5000)
    assert run.routing_sample_rate == DEMO_SAMPLE_RATE and run.agreement_window_s == DEMO_AGREEMENT_WINDOW_S
    assert run.curation_retrain_every == 141  # 3% of the 4,700 sessions after the seed set
    assert run.redis_key_prefix.endswith("demo-r1:")
    chosen = Settings(state_dir=tmp_path, routing_sample_rate=0.2, curation_retrain_every=50,
                      agreement_window_s=120)
    kept = loop_settings(demo_settings(chosen, "r2"), 5000)
    assert (kept.routing_sample_rate, kept.curation_retrain_every, kept.agreement_window_s) == (0.2, 50, 120)
    assert loop_settings(demo_settings(base, "r3"), 100).curation_retrain_every == 10  # never below 10


def test_on_a_real_base_the_seed_set_is_smaller_and_trained_longer_unless_chosen(tmp_path: Path) -> None:
    real = loop_settings(demo_settings(Settings(state_dir=tmp_path, student_model="smollm2"), "r1"), 400)
    assert real.curation_seed_size == DEMO_REAL_BASE["curation_seed_size"] < Settings().curation_seed_size
    assert real.trainer_epochs == DEMO_REAL_BASE["trainer_epochs"]
    assert real.curation_retrain_every == 10  # 3% of the 272 sessions after the seed set, at least 10
    chosen = Settings(state_dir=tmp_path, student_model="smollm2", curation_seed_size=120, trainer_epochs=2)
    kept = loop_settings(demo_settings(chosen, "r2"), 400)
    assert (kept.curation_seed_size, kept.trainer_epochs) == (120, 2)
    tiny = loop_settings(demo_settings(Settings(state_dir=tmp_path), "r3"), 400)
    assert (tiny.curation_seed_size, tiny.trainer_epochs) == (Settings().curation_seed_size, None)
    built = tmp_path / "models" / "tiny-abc"  # a tiny base named by its path (as tests and `--base DIR` do)
    built.mkdir(parents=True)
    (built / MANIFEST).write_text(json.dumps({"kind": "tiny", "base_hash": "sha256:00"}))
    by_path = loop_settings(demo_settings(Settings(state_dir=tmp_path, student_model=str(built)), "r4"), 400)
    assert (by_path.curation_seed_size, by_path.trainer_epochs) == (Settings().curation_seed_size, None)


def test_workers_get_the_demo_settings_by_name_and_their_own_default_where_unset(tmp_path: Path) -> None:
    real = loop_settings(demo_settings(Settings(state_dir=tmp_path, student_model="smollm2"), "r1"), 400)
    env = worker_env(real, "/models/x", "vllm")
    assert env["LABELQ_TRAINER_EPOCHS"] == "6" and env["LABELQ_CURATION_SEED_SIZE"] == "128"
    assert "LABELQ_TRAINER_EPOCHS" not in worker_env(loop_settings(demo_settings(
        Settings(state_dir=tmp_path), "r2"), 400), "/models/x", "vllm")
    assert all(f"LABELQ_{name.upper()}" in env for name in WORKER_SETTINGS)
