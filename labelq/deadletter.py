"""The dead-letter store: everything that could not be labelled, with its reason.

Records are buffered and written as one JSONL object per batch and task under
``deadletter/<stage>/<task>/<date>-<batch>-<seq>.jsonl``, the layout of the
workers' dead letters (``deadletter/<stage>/<task>/<chunk>.jsonl``, see
``records.commit_chunk``); counts per reason (overall and per task) are kept
in Redis for ``labelq status`` and ``labelq audit``. The object is written
before the counters move, so a count never points at a record that does not
exist.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime

import redis

from labelq import keyspace
from labelq.schemas import DeadLetter, encode_jsonl
from labelq.settings import Settings
from labelq.store import ObjectStore


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
