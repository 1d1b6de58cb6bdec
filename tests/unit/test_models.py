"""The base model as a stored artifact: resolving LABELQ_STUDENT_MODEL (never building) and base hashes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from labelq.errors import ConfigError
from labelq.models import (
    MANIFEST,
    base_hash,
    folder_hash,
    mismatch_message,
    point_tiny_at,
    resolve_base_model,
    same_base,
    settings_base_hash,
    write_manifest,
)
from labelq.settings import Settings


def fake_model(folder: Path, weights: bytes = b"\1" * 32) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text('{"model": {}}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "README.md").write_text("not hashed")
    return folder


def test_missing_tiny_is_a_config_error_that_says_how_and_builds_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(state_dir=tmp_path / "state", student_model="tiny")
    monkeypatch.delitem(sys.modules, "trainer.tiny_model", raising=False)  # put back after the test
    with pytest.raises(ConfigError, match="run `labelq model tiny`") as err:
        resolve_base_model(settings)
    assert "LABELQ_STUDENT_MODEL" in str(err.value)
    assert not (tmp_path / "state" / "models").exists()  # nothing built, nothing half-built
    assert "trainer.tiny_model" not in sys.modules  # the core never reaches for the builder
    # A built folder without a manifest (an interrupted or pre-manifest build) is not enough either.
    fake_model(tmp_path / "state" / "models" / "tiny-x")
    (tmp_path / "state" / "models" / "tiny.json").write_text('{"name": "tiny-x"}')
    with pytest.raises(ConfigError, match="labelq model tiny"):
        resolve_base_model(settings)


def test_make_backend_does_not_build_a_missing_tiny(tmp_path: Path) -> None:
    from labelq.engines import make_backend

    settings = Settings(state_dir=tmp_path / "state", student_model="tiny", student_backend="transformers")
    with pytest.raises(ConfigError, match="labelq model tiny"):
        make_backend(settings)
    assert not (tmp_path / "state" / "models").exists()


def test_tiny_resolves_to_the_built_model_named_by_the_pointer(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", student_model="tiny")
    folder = fake_model(tmp_path / "state" / "models" / "tiny-abc")
    manifest = write_manifest(folder, kind="tiny", builder={"config": {"train_steps": 3}})
    point_tiny_at(settings, folder)
    assert resolve_base_model(settings) == str(folder)
    assert settings_base_hash(settings) == manifest["base_hash"]
    on_disk = json.loads((folder / MANIFEST).read_text())
    assert on_disk["base_hash"].startswith("sha256:") and on_disk["kind"] == "tiny"
    assert set(on_disk["files"]) == {"config.json", "tokenizer.json", "model.safetensors"}


def test_paths_and_hub_names_resolve_as_given(tmp_path: Path) -> None:
    folder = fake_model(tmp_path / "m")
    assert resolve_base_model(Settings(state_dir=tmp_path, student_model=str(folder))) == str(folder)
    assert resolve_base_model(Settings(state_dir=tmp_path, student_model="Org/Model-1B")) == "Org/Model-1B"
    # A path that is not here may be on an `openai` student's remote server: given as is, but no hash.
    absent = str(tmp_path / "absent")
    assert resolve_base_model(Settings(state_dir=tmp_path, student_model=absent)) == absent
    with pytest.raises(ConfigError, match="LABELQ_STUDENT_MODEL"):
        base_hash(absent)


def test_hash_covers_weights_config_tokenizer_only(tmp_path: Path) -> None:
    a = fake_model(tmp_path / "a")
    b = fake_model(tmp_path / "b")
    (b / "README.md").write_text("other notes")
    (b / "labelq_tiny.json").write_text("{}")
    assert folder_hash(a)[0] == folder_hash(b)[0]
    (b / "model.safetensors").write_bytes(b"\2" * 32)
    assert folder_hash(a)[0] != folder_hash(b)[0]


def test_folder_without_manifest_is_hashed_once_and_cached(tmp_path: Path) -> None:
    folder = fake_model(tmp_path / "m")
    cache = tmp_path / "cache"
    first = base_hash(str(folder), cache)
    assert first == folder_hash(folder)[0]
    assert not (folder / MANIFEST).exists()  # a user's model folder is left alone
    [entry] = (cache / ".hashes").iterdir()
    assert json.loads(entry.read_text())["base_hash"] == first
    (folder / "model.safetensors").write_bytes(b"\3" * 40)  # changed weights: size differs, hash again
    assert base_hash(str(folder), cache) != first


def test_hub_names_carry_the_cached_commit_when_known(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert base_hash("Org/Model-1B") == "hub:Org/Model-1B"
    ref = tmp_path / "models--Org--Model-1B" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("0123abcd\n")
    assert base_hash("Org/Model-1B") == "hub:Org/Model-1B@0123abcd"


def test_same_base() -> None:
    assert same_base("sha256:aa", "sha256:aa")
    assert not same_base("sha256:aa", "sha256:bb")
    assert same_base("hub:Org/M@c1", "hub:Org/M")  # one side cannot see the commit offline
    assert not same_base("hub:Org/M@c1", "hub:Org/M@c2")
    assert not same_base("hub:Org/M", "hub:Org/N")
    assert not same_base("hub:Org/M", "sha256:aa")
    message = mismatch_message("session-label", 3, "sha256:aa", "sha256:bb", "/models/x")
    assert "sha256:aa" in message and "sha256:bb" in message and "LABELQ_STUDENT_MODEL" in message
