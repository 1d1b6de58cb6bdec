"""Shared set-up for teacher tests: settings pointing at the fake OpenAI server, chunks."""

from __future__ import annotations

from typing import Any

import redis
from pydantic import SecretStr

from labelq import keyspace
from labelq.hashing import content_hash
from labelq.schemas import ChunkMessage, LabelRecord, chunk_wire
from labelq.settings import Settings
from labelq.store import open_store
from labelq.synth import generate
from tests.support.helpers import jsonl_objects

API_KEY = "sk-test-SECRET0123456789abcdef"
# The replay teacher answers at once and goes through the global rate limiter like a provider would.
REPLAY_UNLIMITED: dict[str, Any] = {"teacher_backend": "replay", "teacher_replay_latency_s": 0.0,
                                    "teacher_rpm": 10**6, "teacher_tpm": 10**9}
# The same limits lifted for worker processes: the default 500 a minute paces 200 sessions over 24 s.
REPLAY_RATE_LIFTED = {"LABELQ_TEACHER_RPM": "1000000", "LABELQ_TEACHER_TPM": "1000000000"}


def teacher_settings(settings: Settings, base_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "teacher_backend": "openai", "teacher_base_url": base_url, "teacher_api_key": SecretStr(API_KEY),
        "teacher_backoff_base_s": 0.01, "teacher_backoff_max_s": 0.05, "teacher_timeout_s": 2.0,
        "teacher_pause_s": 0.1,
        # No pacing: at the default 500 a minute, 120 sessions wait ~15 s on the limiter (tested on its own).
        "teacher_rpm": 10**6, "teacher_tpm": 10**9,
    }
    values.update(extra)
    return settings.model_copy(update=values)


def make_chunk(sessions: list[dict[str, Any]], task: str = "session-label", route: str = "seed") -> ChunkMessage:
    return ChunkMessage.decode(chunk_wire(task, route, [(str(s["session_id"]), content_hash(s), s) for s in sessions]))


def chunks_of(n: int, size: int, seed: int = 1) -> list[ChunkMessage]:
    sessions = list(generate(n, seed))
    return [make_chunk(sessions[i:i + size]) for i in range(0, n, size)]


def teacher_records(settings: Settings, task: str = "session-label") -> list[LabelRecord]:
    return [LabelRecord.decode(row) for row in jsonl_objects(settings, keyspace.labels_prefix("teacher", task))]


def teacher_dead_letters(settings: Settings, task: str = "session-label") -> list[dict[str, Any]]:
    return jsonl_objects(settings, keyspace.dead_letters_prefix("teacher", task))


def label_with_replay(settings: Settings, client: redis.Redis, sessions: list[dict[str, Any]]) -> None:
    """Label ``sessions`` in this process as a teacher worker would, with the replay teacher. Its rate
    limit is lifted: at the default 500 requests a minute, 300 sessions would wait 36 s on the limiter."""
    from workers.teacher.tasks import run_teacher_chunk

    settings = settings.model_copy(update=REPLAY_UNLIMITED)

    def requeue(chunk: ChunkMessage, items: object) -> None:
        raise AssertionError("the replay teacher never hands work back")

    store = open_store(settings)
    for start in range(0, len(sessions), 64):
        run_teacher_chunk(settings, store, client, make_chunk(sessions[start:start + 64]), requeue=requeue)
