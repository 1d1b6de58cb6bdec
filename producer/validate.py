"""Validation of one raw record: pure, no I/O. Accepted sessions or a rejection reason.

Reasons (stable codes, counted in status and the ingest summary):
``too_large``, ``invalid_utf8``, ``invalid_json``, ``not_an_object``,
``too_deep``, ``missing_id``, ``invalid_id``, ``unterminated_array``,
``trailing_data``, ``invalid_gzip``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from labelq.hashing import content_hash
from producer.sources import RawRecord


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int
    max_depth: int
    max_id_chars: int
    id_path: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_bytes=settings.max_session_bytes,
            max_depth=settings.max_session_depth,
            max_id_chars=settings.max_session_id_chars,
            id_path=tuple(settings.session_id_field.split(".")),
        )


class Accepted(NamedTuple):
    """A valid session. ``raw`` is its JSON exactly as read (validated, so safe to embed)."""

    session_id: str
    content_hash: str
    raw: bytes


class Rejected(NamedTuple):
    reason: str
    detail: str


_STRUCTURAL = {
    "unterminated_array": "the JSON array around this element is broken",
    "trailing_data": "the JSON array around this element is broken",
    "invalid_gzip": "the source starts like gzip but does not decompress: the rest of it was not read",
}


def nesting_depth(obj: Any) -> int:
    """Depth of nested objects/arrays (a scalar is 0), without recursion."""
    depth = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            depth = max(depth, level)
            stack.extend((v, level + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            depth = max(depth, level)
            stack.extend((v, level + 1) for v in node if isinstance(v, (dict, list)))
    return depth


def extract_id(payload: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = payload
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def validate(record: RawRecord, limits: Limits) -> Accepted | Rejected:
    """Accept a session or say exactly why not."""
    if record.structural_error:
        return Rejected(record.structural_error, _STRUCTURAL.get(record.structural_error, record.structural_error))
    if record.oversize or len(record.data) > limits.max_bytes:
        return Rejected("too_large", f"session exceeds {limits.max_bytes} bytes")
    try:
        obj = orjson.loads(record.data)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "recursion" in msg.lower() or "depth limit" in msg.lower():
            return Rejected("too_deep", f"nesting exceeds the parser's limit: {msg[:120]}")
        try:
            record.data.decode("utf-8")
        except UnicodeDecodeError:
            return Rejected("invalid_utf8", "input is not valid UTF-8")
        return Rejected("invalid_json", msg[:200])
    if not isinstance(obj, dict):
        return Rejected("not_an_object", f"a session must be a JSON object, got {type(obj).__name__}")
    # Cheap bound first: depth can never exceed the number of opening brackets.
    openers = record.data.count(b"{") + record.data.count(b"[")
    if openers > limits.max_depth and nesting_depth(obj) > limits.max_depth:
        return Rejected("too_deep", f"nesting exceeds {limits.max_depth} levels")
    raw_id = extract_id(obj, limits.id_path)
    if raw_id is None or raw_id == "":
        return Rejected("missing_id", f"no id at {'.'.join(limits.id_path)!r}")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return Rejected("invalid_id", f"id must be a string or an integer, got {type(raw_id).__name__}")
    session_id = str(raw_id)
    if len(session_id) > limits.max_id_chars:
        return Rejected("invalid_id", f"id longer than {limits.max_id_chars} characters")
    if "\x00" in session_id:
        return Rejected("invalid_id", "id contains a NUL character")
    return Accepted(session_id, content_hash(obj), record.data)
