"""Where the tests keep the models they build (the tiny base, SmolLM2 converted from its GGUF file, the test
adapters): one cache per user, shared by every checkout, so a fresh clone does not rebuild them.

Its folder is named by a hash of the code that shapes what is built in it (the tiny base's builder, the
synthetic world and its labels, the prompt and the spec, LoRA training, the GGUF import): a change to any of
them builds afresh beside the old folders, of which the newest few are kept. ``LABELQ_TEST_CACHE`` names a
folder to use as it is instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What a cached model or test adapter depends on, besides the inputs already in its own name (the tiny base's
# config, the adapters' examples and training config, the GGUF file's hash).
SHAPING_CODE = ("trainer/*.py", "labelq/synth/*.py", "labelq/specs/*", "labelq/prompts.py", "labelq/render.py",
                "labelq/masking.py", "labelq/special_tokens.py", "labelq/models.py", "labelq/spec.py",
                "tests/support/student.py")
KEEP = 3  # folders of other code versions kept (a SmolLM2 conversion is ~540 MB)


def code_hash(root: Path = ROOT) -> str:
    digest = hashlib.blake2b(digest_size=6)
    for path in sorted({p for pattern in SHAPING_CODE for p in root.glob(pattern) if p.is_file()}):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def model_cache(chosen: str | None = None) -> Path:
    """``chosen`` (LABELQ_TEST_CACHE) as it is, else ``$XDG_CACHE_HOME/labelq/test-cache/<code hash>``
    (``~/.cache`` without XDG_CACHE_HOME); older code versions' folders beyond the newest few are removed."""
    if chosen:
        return Path(chosen)
    parent = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labelq" / "test-cache"
    folder = parent / code_hash()
    folder.mkdir(parents=True, exist_ok=True)
    folder.touch()  # newest used first
    others = sorted((p for p in parent.iterdir() if p.is_dir() and p != folder),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)
    return folder
