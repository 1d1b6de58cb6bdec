"""The dead-letter store: everything that could not be labelled, with its reason.

Writing (:class:`DeadLetterSink`, for ingest): records are buffered and written as one JSONL object per batch and task under
``deadletter/<stage>/<task>/<date>-<batch>-<seq>.jsonl``, the layout of the
workers' dead letters (``deadletter/<stage>/<task>/<chunk>.jsonl``, see
``records.commit_chunk``); counts per reason (overall and per task) are kept
in Redis for ``labelq status`` and ``labelq audit``. The object is written
before the counters move, so a count never points at a record that does not
exist.

Reading (:func:`read_letters`, for ``labelq deadletter``): every letter under
a stage (and task) folder, filtered by :class:`LetterFilter`, each with a
stable id (:func:`letter_id`) and whether it was redriven (``labelq.redrive``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from pydantic import ValidationError

from labelq import keyspace
from labelq.errors import ConfigError, DecodeError
from labelq.logging import get_logger
from labelq.queue.inspect import CHUNK_QUEUES
from labelq.schemas import DeadLetter, decode_jsonl, encode_jsonl, parse_utc
from labelq.settings import Settings
from labelq.store import ObjectStore

log = get_logger(__name__)
STAGES = ("ingest", "teacher", "student")


def truncate_raw(data: bytes, max_bytes: int) -> tuple[str, bool]:
    """Raw input for humans: at most ``max_bytes``, invalid UTF-8 replaced, NULs shown."""
    head = data[:max_bytes]
    text = head.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
    return text, len(data) > max_bytes


class DeadLetterSink:
    """Buffers dead letters of one run or chunk and writes them in batches."""

    def __init__(
        self, settings: Settings, store: ObjectStore, client: redis.Redis, *, stage: str,
        batch_name: str | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._redis = client
        self._stage = stage
        self._batch = batch_name or uuid.uuid4().hex
        self._seq = 0
        self._buffer: list[DeadLetter] = []
        self.counts: Counter[str] = Counter()

    def add(self, letter: DeadLetter) -> None:
        self._buffer.append(letter)
        self.counts[letter.reason] += 1
        if len(self._buffer) >= self._settings.dead_letter_flush_records:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        name = f"{datetime.now(UTC):%Y-%m-%d}-{self._batch}-{self._seq:06d}"
        per_task: dict[str | None, list[DeadLetter]] = {}
        for letter in self._buffer:
            per_task.setdefault(letter.task, []).append(letter)
        for task, letters in per_task.items():
            self._store.put_bytes(keyspace.dead_letters(self._stage, task, name), encode_jsonl(list(letters)))
        per_reason: Counter[tuple[str | None, str]] = Counter(
            (d.task, d.reason) for d in self._buffer
        )
        pipe = self._redis.pipeline(transaction=True)
        for (task, reason), n in per_reason.items():
            pipe.hincrby(keyspace.dlq_reasons(self._settings), reason, n)
            if task:
                pipe.hincrby(keyspace.dlq_task(self._settings, task), reason, n)
        pipe.execute()
        self._seq += 1
        self._buffer.clear()


# --- reading ---------------------------------------------------------------------------------


def letter_id(key: str, letter: DeadLetter, line: int) -> str:
    """A letter's id: its object and its session (its line when it has none). A redelivered chunk
    rewrites its object with the same sessions, so the id does not move."""
    who = letter.content_hash or f"line:{line}"
    return hashlib.blake2b(f"{key}\n{who}".encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredLetter:
    id: str
    key: str  # the object it lies in
    letter: DeadLetter
    redriven: bool = False

    @property
    def refused(self) -> str | None:
        """Why this letter cannot be redriven; None when it can."""
        d = self.letter
        if d.stage == "ingest":
            return "bad input: fix the source and ingest it again"
        if d.stage not in CHUNK_QUEUES:
            return f"stage {d.stage!r} has no queue to send it back to"
        if d.payload is None or not (d.task and d.session_id and d.content_hash):
            return "no session kept in the letter (an undecodable message, or written before redrive)"
        return None

    @property
    def state(self) -> str:
        return "redriven" if self.redriven else "redrivable" if self.refused is None else "not_redrivable"


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters: all of them, or those of a stage, task, reason and creation time range
    (``since`` included, ``until`` excluded, as in ``labelq export``)."""

    stage: str | None = None
    task: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, *, stage: str | None = None, task: str | None = None, reason: str | None = None,
              since: str | None = None, until: str | None = None) -> LetterFilter:
        """From command-line values; ConfigError names the option that is wrong."""
        if stage is not None and stage not in STAGES:
            raise ConfigError(f"--stage {stage!r}: choose from {', '.join(STAGES)}")
        try:
            return cls(stage, task, reason, parse_utc(since) if since else None,
                       parse_utc(until) if until else None)
        except ValueError as exc:
            raise ConfigError(f"--since/--until: {exc} (use a UTC date like 2026-05-01, or an ISO time)") from None

    def prefix(self) -> str:
        # Old ingest letters lie under deadletter/ingest/<date>/: their task is read from the letter.
        task = self.task if self.stage not in (None, "ingest") else None
        return keyspace.dead_letters_prefix(self.stage, task)

    def matches(self, letter: DeadLetter) -> bool:
        if self.stage is not None and letter.stage != self.stage:
            return False
        if self.task is not None and letter.task != self.task:
            return False
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.since is None and self.until is None:
            return True
        created = parse_utc(letter.created_at)
        return not ((self.since and created < self.since) or (self.until and created >= self.until))


def _letters_in(store: ObjectStore, key: str) -> Iterator[tuple[int, DeadLetter]]:
    try:
        rows = decode_jsonl(store.get_bytes(key))
        letters = [(i, DeadLetter.model_validate(row)) for i, row in enumerate(rows)]
    except (DecodeError, ValidationError) as exc:  # one bad object must not hide the others
        log.warning("dead_letter_object_unreadable", key=key, error=str(exc)[:200])
        return
    yield from letters


def read_letters(store: ObjectStore, client: redis.Redis, settings: Settings,
                 where: LetterFilter = LetterFilter()) -> list[StoredLetter]:
    """Every letter ``where`` selects, newest first, each marked redriven or not."""
    found = [StoredLetter(letter_id(key, letter, line), key, letter)
             for key in store.list(where.prefix()) for line, letter in _letters_in(store, key)
             if where.matches(letter)]
    done = redriven_ids(client, settings, [s.id for s in found])
    found = [StoredLetter(s.id, s.key, s.letter, s.id in done) for s in found]
    found.sort(key=lambda s: s.letter.created_at, reverse=True)
    return found


def redriven_ids(client: redis.Redis, settings: Settings, ids: Iterable[str], batch: int = 5_000) -> set[str]:
    """Those of ``ids`` that ``labelq deadletter redrive`` sent back."""
    wanted, done = list(ids), set[str]()
    for start in range(0, len(wanted), batch):
        part = wanted[start:start + batch]
        flags = client.smismember(keyspace.dlq_redriven(settings), part)
        done.update(i for i, flag in zip(part, flags, strict=True) if flag)
    return done


def find_letters(letters: Iterable[StoredLetter], needle: str) -> list[StoredLetter]:
    """The letters whose id, session id or content hash is ``needle``."""
    return [s for s in letters if needle in (s.id, s.letter.session_id, s.letter.content_hash)]


@dataclass(frozen=True, slots=True)
class LetterCount:
    stage: str
    task: str | None
    reason: str
    letters: int
    redriven: int
    redrivable: int  # not redriven yet, and can be


def count_letters(letters: Iterable[StoredLetter]) -> list[LetterCount]:
    """Letters per (stage, task, reason), largest first."""
    per: dict[tuple[str, str | None, str], list[int]] = {}
    for s in letters:
        row = per.setdefault((s.letter.stage, s.letter.task, s.letter.reason), [0, 0, 0])
        row[0] += 1
        row[1] += s.redriven
        row[2] += s.state == "redrivable"
    return [LetterCount(stage, task, reason, *row)
            for (stage, task, reason), row in sorted(per.items(), key=lambda kv: (-kv[1][0], kv[0][0], str(kv[0][1]), kv[0][2]))]
