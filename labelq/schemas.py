"""Versioned wire and store schemas. Decoding failures raise DecodeError.

* ``ChunkMessage``  a queue message: one chunk of sessions for one task (a large session's
                    payload by reference: ``payload_ref``, see :mod:`labelq.payloads`).
* ``LabelRecord``   one label in ``labels/<source>/...`` (JSONL).
* ``DeadLetter``    one thing that could not be labelled, with its reason.

``decode_as`` reads a typed result (a dataclass: status snapshot, training
report, curation manifest) back from its ``to_dict()`` JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, NamedTuple, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from labelq.errors import DecodeError, InvalidKey, PayloadUnresolved
from labelq.hashing import chunk_id
from labelq.keyspace.store_paths import payload as payload_key

CHUNK_SCHEMA_VERSION: Final = 1
LABEL_SCHEMA_VERSION: Final = 1
DEAD_LETTER_SCHEMA_VERSION: Final = 1


_M = TypeVar("_M", bound=BaseModel)


def _decode(model: type[_M], raw: Any, what: str) -> _M:
    try:
        if isinstance(raw, (bytes, str)):
            raw = orjson.loads(raw)
        return model.model_validate(raw)
    except (ValidationError, orjson.JSONDecodeError) as exc:
        raise DecodeError(f"not a {what}: {exc}") from exc


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_utc(value: str) -> datetime:
    """A date (``2026-05-01``, midnight) or ISO time as an aware datetime; no zone means UTC.
    ValueError names the value when it is neither."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a date or ISO time: {value!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class PayloadRef(NamedTuple):
    """A claim check: the object-store key of a session's payload (:func:`labelq.keyspace.payload`)."""

    key: str


class SessionItem(BaseModel):
    """One session of a chunk: ``payload`` inline, or (claim check, for a large session) ``payload_ref``,
    the object-store key its payload was written to before the chunk was enqueued. A worker resolves the
    reference (:mod:`labelq.payloads`) and then holds both: the payload to label, the reference to hand
    the session on with (a republished session never carries its large payload inline)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str = Field(min_length=1)
    content_hash: str = Field(min_length=8)
    payload: dict[str, Any] | None = None
    payload_ref: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _has_a_payload(self) -> SessionItem:
        if self.payload is None and self.payload_ref is None:
            raise ValueError("a session needs its payload or a payload_ref")
        return self

    def require_payload(self) -> dict[str, Any]:
        """The session itself; a claim-checked one must have been resolved (:mod:`labelq.payloads`)."""
        if self.payload is None:
            raise PayloadUnresolved(f"session {self.session_id!r} carries only {self.payload_ref!r}: "
                                    "resolve it through the store first")
        return self.payload

    def wire(self) -> dict[str, Any]:
        """As it goes on a queue: the reference when it has one (never the large payload), else the payload."""
        if self.payload_ref is not None:
            return {"session_id": self.session_id, "content_hash": self.content_hash,
                    "payload_ref": self.payload_ref}
        return {"session_id": self.session_id, "content_hash": self.content_hash, "payload": self.payload}

    def wire_part(self) -> bytes | PayloadRef:
        """What :func:`chunk_json` embeds for this session: its reference, or its payload as JSON."""
        return PayloadRef(self.payload_ref) if self.payload_ref is not None else orjson.dumps(self.payload)


class ChunkMessage(BaseModel):
    """``{v, chunk_id, task, route, sessions: [{session_id, content_hash, payload | payload_ref}]}``.

    A ``payload_ref`` must be the key :func:`labelq.keyspace.payload` gives the session's task and content
    hash: a message cannot point a worker at any other object of the store.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = CHUNK_SCHEMA_VERSION
    chunk_id: str = Field(min_length=8)
    task: str = Field(min_length=1)
    sessions: list[SessionItem] = Field(min_length=1)
    # Where the chunk came from: "seed", "sample", "steady", "escalation", "forced", or SHADOW_ROUTE.
    route: str = "steady"

    @model_validator(mode="after")
    def _references_are_the_sessions_own(self) -> ChunkMessage:
        for s in self.sessions:
            if s.payload_ref is not None:
                try:
                    own = payload_key(self.task, s.content_hash)
                except InvalidKey as exc:
                    raise ValueError(f"session {s.session_id!r}: {exc}") from None
                if s.payload_ref != own:
                    raise ValueError(f"session {s.session_id!r}: payload_ref {s.payload_ref[:200]!r} is not "
                                     f"its payload's key {own!r}")
        return self

    @classmethod
    def decode(cls, raw: Any) -> ChunkMessage:
        """Parse a message body (dict, str or bytes); DecodeError when it does not fit."""
        return _decode(cls, raw, f"v{CHUNK_SCHEMA_VERSION} chunk message")

    def wire(self) -> dict[str, Any]:
        return {"v": self.v, "chunk_id": self.chunk_id, "task": self.task, "route": self.route,
                "sessions": [s.wire() for s in self.sessions]}


def chunk_wire(
    task: str, route: str, sessions: list[tuple[str, str, dict[str, Any] | PayloadRef]]
) -> dict[str, Any]:
    """A chunk message as its wire dict, built without re-validating trusted parts.

    The producer has validated every session already; workers decode with
    :meth:`ChunkMessage.decode`. A session given as a :class:`PayloadRef` carries ``payload_ref``.
    """
    return {
        "v": CHUNK_SCHEMA_VERSION,
        "chunk_id": chunk_id(task, (h for _, h, _ in sessions)),
        "task": task,
        "route": route,
        "sessions": [
            {"session_id": sid, "content_hash": h,
             **({"payload_ref": part.key} if isinstance(part, PayloadRef) else {"payload": part})}
            for sid, h, part in sessions
        ],
    }


def chunk_json(
    task: str, route: str, sessions: Sequence[tuple[str, str, bytes | PayloadRef]],
    chunk_id_hex: str | None = None,
) -> bytes:
    """The same chunk as :func:`chunk_wire`, as JSON bytes spliced from validated raw payloads.

    The producer never re-parses or re-serializes a payload: ``payload`` bytes
    were accepted by a strict JSON parser, so they embed as they are. A session
    given as a :class:`PayloadRef` (claim check) carries ``payload_ref`` instead.
    """
    if chunk_id_hex is None:
        chunk_id_hex = chunk_id(task, (h for _, h, _ in sessions))
    head = orjson.dumps({"v": CHUNK_SCHEMA_VERSION, "chunk_id": chunk_id_hex,
                         "task": task, "route": route})
    parts = [head[:-1], b',"sessions":[']
    for sid, h, raw in sessions:  # one join at the end: each payload is copied once
        parts += (b'{"session_id":', orjson.dumps(sid), b',"content_hash":"', h.encode())
        if isinstance(raw, PayloadRef):
            parts += (b'","payload_ref":', orjson.dumps(raw.key), b"},")
        else:
            parts += (b'","payload":', raw, b"},")
    parts[-1] = b"}"  # the last session's closing brace, without the comma
    parts.append(b"]}")
    return b"".join(parts)


Source = Literal["teacher", "student", "human"]


class LabelRecord(BaseModel):
    """One label; the fields of docs/architecture.md's label record contract."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = LABEL_SCHEMA_VERSION
    session_id: str
    content_hash: str
    task: str
    label: str
    source: Source
    model: str
    adapter_version: int | None = None
    prompt_version: str
    confidence: float | None = None
    words: int
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    chunk_id: str
    created_at: str = Field(default_factory=utc_now_iso)
    flags: list[str] = Field(default_factory=list)

    @classmethod
    def decode(cls, raw: bytes | str | dict[str, Any]) -> LabelRecord:
        return _decode(cls, raw, f"v{LABEL_SCHEMA_VERSION} label record")


SHADOW_ROUTE = "shadow"  # a student chunk of teacher-sample sessions, labelled for agreement only
SHADOW_SCHEMA_VERSION: Final = 1


class ShadowRecord(BaseModel):
    """The serving student's answer to a session of the teacher sample (``shadow/<task>/<chunk>.jsonl``):
    kept to measure agreement with the teacher (``labelq.agreement``), never a label of the session."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = SHADOW_SCHEMA_VERSION
    session_id: str
    content_hash: str
    task: str
    adapter_version: int
    label: str  # the answer as the contract cleaned it, or the raw answer when it broke the contract
    within_contract: bool
    confidence: float | None = None
    chunk_id: str
    created_at: str = Field(default_factory=utc_now_iso)

    @classmethod
    def decode(cls, raw: bytes | str | dict[str, Any]) -> ShadowRecord:
        return _decode(cls, raw, f"v{SHADOW_SCHEMA_VERSION} shadow record")


class DeadLetter(BaseModel):
    """Something that could not be labelled. ``raw`` is truncated input (or the model's answer), for
    humans. ``payload`` is the session itself, kept by the workers so ``labelq deadletter redrive`` can
    send it back; None for ingest rejects (bad input is fixed at its source) and for letters written
    before redrive existed (they read back with None and cannot be redriven)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = DEAD_LETTER_SCHEMA_VERSION
    reason: str
    detail: str = ""
    stage: str  # "ingest", "teacher", "student", "trainer"
    task: str | None = None
    session_id: str | None = None
    content_hash: str | None = None
    chunk_id: str | None = None
    source: str | None = None
    line: int | None = None
    raw: str | None = None
    raw_truncated: bool = False
    payload: dict[str, Any] | None = None
    created_at: str = Field(default_factory=utc_now_iso)


def encode_jsonl(records: list[BaseModel]) -> bytes:
    """Records as JSON lines, one per record."""
    return b"".join(orjson.dumps(r.model_dump(mode="json")) + b"\n" for r in records)


def decode_jsonl(data: bytes) -> list[dict[str, Any]]:
    try:
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"corrupt JSONL object: {exc}") from exc


_T = TypeVar("_T")


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}  # building one is slow: once per type


def decode_as(cls: type[_T], raw: Any, what: str) -> _T:
    """A typed result (a dataclass) from its ``to_dict()`` form (dict, str or bytes); DecodeError when it
    does not fit. Unknown keys are ignored, so a reader accepts files written by a newer writer."""
    try:
        if isinstance(raw, (bytes, str)):
            raw = orjson.loads(raw)
        adapter = _ADAPTERS.get(cls) or _ADAPTERS.setdefault(cls, TypeAdapter(cls))
        value: _T = adapter.validate_python(raw)
        return value
    except (ValidationError, orjson.JSONDecodeError) as exc:
        raise DecodeError(f"not a {what}: {exc}") from exc
