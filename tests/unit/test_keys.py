from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelq.errors import InvalidKey
from labelq.store.keys import check_key, key, segment


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b", "a\x00b", "x/"])
def test_check_key_refuses_traversal_and_oddities(bad: str) -> None:
    with pytest.raises(InvalidKey):
        check_key(bad)


@given(st.text(max_size=60))
def test_segment_always_stays_one_harmless_segment(value: str) -> None:
    encoded = segment(value)
    assert "/" not in encoded and "\\" not in encoded and "\x00" not in encoded
    assert encoded not in {"", ".", ".."} and not encoded.startswith(".")
    assert check_key(key("labels", encoded, "x.jsonl")).startswith("labels/")


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_segment_is_injective(a: str, b: str) -> None:
    if a != b:
        assert segment(a) != segment(b)


def test_segment_keeps_plain_ids_readable() -> None:
    assert segment("s1-00000042") == "s1-00000042"
    assert segment("../etc/passwd") == "%2E.%2Fetc%2Fpasswd"
