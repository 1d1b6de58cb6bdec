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


def test_a_checkout_finds_the_shared_folder_and_old_code_versions_are_pruned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parent = tmp_path / "labelq" / "test-cache"
    for i in range(5):  # folders of five older code versions, oldest first
        (parent / f"old{i}").mkdir(parents=True)
        os.utime(parent / f"old{i}", (1_000_000 + i, 1_000_000 + i))
    folder = mc.model_cache()
    assert folder == parent / mc.code_hash() and folder.is_dir()
    assert mc.model_cache() == folder  # a second checkout of the same code: the same folder
    assert sorted(p.name for p in parent.iterdir()) == sorted([folder.name, "old4", "old3"])  # KEEP 3
    assert mc.model_cache(str(tmp_path / "mine")) == tmp_path / "mine"
