"""Where the tests keep the models they build (the tiny base, SmolLM2 converted from its GGUF file, the test
adapters): one cache per user, shared by every checkout, so a fresh clone does not rebuild them.

Its folder is named by a hash of what shapes the models built in it besides the inputs their own names
already hold: the code (the tiny base's builder, the synthetic world and its labels, the prompt, the spec
and the settings' defaults it renders with, LoRA training, the GGUF import) and the versions of the
libraries that train and save them. A change to any of them builds afresh beside the old folders; a folder
no run has opened for a day is removed (a run holds its own for hours at most). ``LABELQ_TEST_CACHE`` names
a folder to use as it is instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHAPING_CODE = ("trainer/__init__.py", "trainer/tiny_model.py", "trainer/wordy.py", "trainer/lora.py",
                "trainer/gguf_import.py", "labelq/synth/*.py", "labelq/specs/*", "labelq/prompts.py",
                "labelq/render.py", "labelq/special_tokens.py", "labelq/models.py", "labelq/spec.py",
                "labelq/settings.py", "tests/support/student.py")
SHAPING_LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "safetensors", "gguf")
UNUSED_S = 24 * 3600  # a folder (or a killed build's .partial work folder) untouched this long goes


def code_hash(root: Path = ROOT) -> str:
    digest = hashlib.blake2b(digest_size=6)
    for path in sorted({p for pattern in SHAPING_CODE for p in root.glob(pattern) if p.is_file()}):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for name in SHAPING_LIBRARIES:
        try:
            digest.update(f"{name}=={metadata.version(name)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name} absent\0".encode())
    return digest.hexdigest()


def model_cache(chosen: str | None = None) -> Path:
    """``chosen`` (LABELQ_TEST_CACHE) as it is, else ``$XDG_CACHE_HOME/labelq/test-cache/<hash>``
    (``~/.cache`` without XDG_CACHE_HOME); other folders and work folders unused for a day are removed."""
    if chosen:
        return Path(chosen)
    parent = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labelq" / "test-cache"
    folder = parent / code_hash()
    folder.mkdir(parents=True, exist_ok=True)
    folder.touch()  # opened now
    stale = time.time() - UNUSED_S
    for old in [p for p in parent.iterdir() if p.is_dir() and p != folder] + list(folder.glob("**/.*.partial")):
        if old.stat().st_mtime < stale:
            shutil.rmtree(old, ignore_errors=True)
    return folder
