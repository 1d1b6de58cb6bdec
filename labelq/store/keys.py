"""Object-store keys that can never escape their prefix.

Keys are built from segments with :func:`key`; every segment that comes from
data (a session id, a task name) is passed through :func:`segment`, which
percent-encodes everything outside ``[A-Za-z0-9._-]`` and the names ``.`` and
``..``. :func:`check_key` is the last line of defence in every backend.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from labelq.errors import InvalidKey

_SAFE = re.compile(r"[A-Za-z0-9._-]+")
MAX_KEY_CHARS = 1024


def segment(value: str) -> str:
    """Encode one untrusted path segment so it stays a single, harmless segment.

    A leading dot is encoded too: it keeps ``.``/``..`` out and never collides
    with the ``.tmp-`` files of an in-progress local write.
    """
    if not value:
        return "%"  # a lone '%' is never produced by quote(): empty stays distinct
    if _SAFE.fullmatch(value) and not value.startswith("."):
        return value
    encoded = quote(value, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def key(*segments: str) -> str:
    """Join already-trusted or :func:`segment`-encoded segments into a key."""
    joined = "/".join(s.strip("/") for s in segments if s)
    check_key(joined)
    return joined


def check_key(value: str) -> str:
    """Raise InvalidKey unless ``value`` is a relative key with no traversal."""
    if not value or len(value) > MAX_KEY_CHARS:
        raise InvalidKey(f"key length must be 1..{MAX_KEY_CHARS} characters")
    if value.startswith("/") or "\\" in value or "\x00" in value:
        raise InvalidKey("key must be relative and contain no backslash or NUL")
    parts = value.split("/")
    if any(p in {"", ".", ".."} for p in parts):
        raise InvalidKey("key has an empty, '.' or '..' segment")
    return value


def check_prefix(value: str) -> str:
    """Like check_key, but an empty prefix (list everything) is allowed."""
    return check_key(value.rstrip("/")) + ("/" if value.endswith("/") else "") if value else ""
