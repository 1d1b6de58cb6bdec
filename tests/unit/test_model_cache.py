"""The tests' model cache: shared across checkouts, named by the code that shapes what is built in it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import model_cache as mc


def test_the_folder_name_changes_with_the_code_that_shapes_the_models_and_only_with_it(tmp_path: Path) -> None:
    (tmp_path / "trainer").mkdir()
    (tmp_path / "labelq").mkdir()
    (tmp_path / "trainer" / "lora.py").write_text("lr = 1e-3\n")
    (tmp_path / "labelq" / "prompts.py").write_text("PROMPT = 'a'\n")
    (tmp_path / "labelq" / "budget.py").write_text("x = 1\n")
    first = mc.code_hash(tmp_path)
    (tmp_path / "labelq" / "budget.py").write_text("x = 2\n")  # not a shaping file
    assert mc.code_hash(tmp_path) == first
    (tmp_path / "trainer" / "lora.py").write_text("lr = 2e-3\n")
    assert mc.code_hash(tmp_path) != first


def test_a_checkout_finds_the_shared_folder_and_only_folders_unused_for_a_day_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parent = tmp_path / "labelq" / "test-cache"
    for name in ("old1", "old2", "in-use"):  # folders of other code versions
        (parent / name).mkdir(parents=True)
    for name in ("old1", "old2"):
        os.utime(parent / name, (1_000_000, 1_000_000))  # last opened long ago
    folder = mc.model_cache()
    assert folder == parent / mc.code_hash() and folder.is_dir()
    killed = folder / "adapters" / ".style.x1.partial"  # a killed run's work folder
    killed.mkdir(parents=True)
    building = folder / "adapters" / ".style.x2.partial"  # another run's build, going on now
    building.mkdir()
    os.utime(killed, (1_000_000, 1_000_000))
    assert mc.model_cache() == folder  # a second checkout of the same code: the same folder
    assert sorted(p.name for p in parent.iterdir()) == sorted([folder.name, "in-use"])
    assert not killed.exists() and building.exists()
    assert mc.model_cache(str(tmp_path / "mine")) == tmp_path / "mine"


def test_the_versions_of_the_libraries_that_build_the_models_are_part_of_the_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = mc.code_hash()
    real = mc.metadata.version
    monkeypatch.setattr(mc.metadata, "version", lambda name: "0.0" if name == "transformers" else real(name))
    assert mc.code_hash() != first
