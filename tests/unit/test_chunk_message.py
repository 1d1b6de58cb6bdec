"""The chunk message contract: small sessions inline exactly as before, large ones by a reference that can
only name the session's own payload object."""

from __future__ import annotations

import orjson
import pytest

from labelq import keyspace
from labelq.errors import DecodeError, PayloadUnresolved
from labelq.hashing import chunk_id
from labelq.schemas import ChunkMessage, PayloadRef, chunk_json, chunk_wire

H1, H2 = "a" * 32, "b" * 32


def test_a_chunk_of_small_sessions_is_the_same_bytes_as_before() -> None:
    body = chunk_json("t", "seed", [("s1", H1, b'{"session_id":"s1","x":[1, 2]}')], "c" * 32)
    assert body == (b'{"v":1,"chunk_id":"' + b"c" * 32 + b'","task":"t","route":"seed","sessions":['
                    b'{"session_id":"s1","content_hash":"' + H1.encode() + b'","payload":{"session_id":"s1","x":[1, 2]}}]}')
    assert chunk_wire("t", "seed", [("s1", H1, {"session_id": "s1"})])["sessions"] == [
        {"session_id": "s1", "content_hash": H1, "payload": {"session_id": "s1"}}]


def test_a_large_session_travels_by_its_own_reference() -> None:
    ref = keyspace.payload("t", H2)
    body = chunk_json("t", "seed", [("s1", H1, b'{"session_id":"s1"}'), ("s2", H2, PayloadRef(ref))])
    assert orjson.loads(body)["sessions"][1] == {"session_id": "s2", "content_hash": H2, "payload_ref": ref}
    assert orjson.loads(body)["chunk_id"] == chunk_id("t", [H1, H2])
    chunk = ChunkMessage.decode(body)
    small, large = chunk.sessions
    assert small.require_payload() == {"session_id": "s1"} and small.payload_ref is None
    assert large.payload is None and large.payload_ref == ref
    with pytest.raises(PayloadUnresolved):
        large.require_payload()
    resolved = large.model_copy(update={"payload": {"session_id": "s2"}})
    assert resolved.require_payload() == {"session_id": "s2"}
    # Handed on, a resolved session carries its reference again, never its payload.
    assert resolved.wire() == {"session_id": "s2", "content_hash": H2, "payload_ref": ref}
    assert resolved.wire_part() == PayloadRef(ref)
    assert ChunkMessage.decode(chunk.wire()) == chunk


@pytest.mark.parametrize("ref", [
    "secrets/sample.key",  # another object of the store
    keyspace.payload("other-task", H2),  # another task's payload
    keyspace.payload("t", H1),  # another session's payload
    "../" + keyspace.payload("t", H2),
])
def test_a_reference_to_anything_but_the_sessions_own_payload_is_refused(ref: str) -> None:
    wire = chunk_wire("t", "seed", [("s2", H2, PayloadRef(ref))])
    with pytest.raises(DecodeError, match="payload_ref"):
        ChunkMessage.decode(wire)


def test_a_session_needs_its_payload_or_a_reference() -> None:
    wire = chunk_wire("t", "seed", [("s1", H1, {"session_id": "s1"})])
    del wire["sessions"][0]["payload"]
    with pytest.raises(DecodeError, match="payload"):
        ChunkMessage.decode(wire)
    bad_hash = chunk_wire("t", "seed", [("s1", "../../x/../y", PayloadRef("payloads/t/../y.json"))])
    with pytest.raises(DecodeError):
        ChunkMessage.decode(bad_hash)
