"""Content hashes and deterministic ids."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

HASH_BYTES = 16


def canonical_json(obj: Any) -> bytes:
    """Key-sorted compact JSON: the same object always gives the same bytes."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def content_hash(obj: Any) -> str:
    """128-bit BLAKE2b of the canonical JSON of ``obj``, as hex."""
    return hashlib.blake2b(canonical_json(obj), digest_size=HASH_BYTES).hexdigest()


def chunk_id(task: str, content_hashes: Iterable[str], parent: str = "") -> str:
    """Deterministic chunk id: a redelivered or re-built chunk gets the same id.

    A chunk handed back (``parent`` = the chunk it came from) gets an id of its
    own even when it holds exactly the same sessions: the parent's id is already
    marked done, and a new chunk under it would never be counted.
    """
    h = hashlib.blake2b(task.encode(), digest_size=HASH_BYTES)
    if parent:
        h.update(b"\0parent:" + parent.encode())
    for ch in content_hashes:
        h.update(ch.encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """A file's sha256 (hex), read in blocks: base model files and adapter files are large."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
