"""Shared set-up for teacher tests: settings pointing at the fake OpenAI server, chunks."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from labelq import keyspace
from labelq.hashing import content_hash
from labelq.schemas import ChunkMessage, LabelRecord, chunk_wire
from labelq.settings import Settings
from labelq.synth import generate
from tests.integration.helpers import jsonl_objects

API_KEY = "sk-test-SECRET0123456789abcdef"


def teacher_settings(settings: Settings, base_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "teacher_backend": "openai", "teacher_base_url": base_url, "teacher_api_key": SecretStr(API_KEY),
        "teacher_backoff_base_s": 0.01, "teacher_backoff_max_s": 0.05, "teacher_timeout_s": 2.0,
        "teacher_pause_s": 0.1,
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
