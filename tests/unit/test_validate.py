from __future__ import annotations

import orjson
import pytest

from producer.sources import RawRecord
from producer.validate import Accepted, Limits, Rejected, nesting_depth, validate

LIMITS = Limits(max_bytes=5_000, max_depth=8, max_id_chars=64, id_path=("session_id",))


def check(data: bytes, limits: Limits = LIMITS) -> Accepted | Rejected:
    return validate(RawRecord("t", 1, data), limits)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"[1, 2]", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b'{"events": []}', "missing_id"),
        (b'{"session_id": ""}', "missing_id"),
        (b'{"session_id": null}', "missing_id"),
        (b'{"session_id": true}', "invalid_id"),
        (b'{"session_id": {"a": 1}}', "invalid_id"),
        (b'{"session_id": "' + b"x" * 65 + b'"}', "invalid_id"),
        (b'{"session_id": "a\\u0000b"}', "invalid_id"),
        (b'{"session_id": "a", "x": ' + b"[" * 20 + b"]" * 20 + b"}", "too_deep"),
        (b"[" * 1100 + b"]" * 1100, "too_deep"),
        (b'{"session_id": "a", "pad": "' + b"x" * 6000 + b'"}', "too_large"),
    ],
)
def test_rejections_have_exact_reasons(data: bytes, reason: str) -> None:
    result = check(data)
    assert isinstance(result, Rejected), result
    assert result.reason == reason
    assert result.detail


def test_accepts_integer_ids_and_dotted_paths() -> None:
    limits = Limits(2_000, 8, 64, ("meta", "id"))
    result = check(b'{"meta": {"id": 42}, "events": [1]}', limits)
    assert isinstance(result, Accepted)
    assert result.session_id == "42"
    assert result.raw == b"{\"meta\": {\"id\": 42}, \"events\": [1]}"


def test_content_hash_ignores_key_order() -> None:
    a = check(orjson.dumps({"session_id": "x", "a": 1, "b": [1, 2]}))
    b = check(b'{"b": [1, 2], "a": 1, "session_id": "x"}')
    assert isinstance(a, Accepted) and isinstance(b, Accepted)
    assert a.content_hash == b.content_hash


def test_nesting_depth() -> None:
    assert nesting_depth(1) == 0
    assert nesting_depth({}) == 1
    assert nesting_depth({"a": [{"b": []}]}) == 4
