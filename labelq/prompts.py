"""Prompt and answer tokens for training and serving: one function, so both match.

The student is trained with the prompt it is served with: the spec's short
student prompt around the rendered session, through the base model's chat
template; the loss is on the answer tokens only. The prompt and the answer of a
training example are neutralised for the tokenizer's own special tokens
(:func:`labelq.special_tokens.tokenizer_neutraliser`) like the engines' prompts:
the same text as served, and no control token that the template did not put there.
"""

from __future__ import annotations

from typing import Any

from labelq.render import render_for_task
from labelq.settings import Settings
from labelq.spec import TaskSpec
from labelq.special_tokens import tokenizer_neutraliser

IGNORE_INDEX = -100


def student_prompt(spec: TaskSpec, settings: Settings, payload: dict[str, Any]) -> str:
    return spec.student.prompt.replace("{session}", render_for_task(spec, settings, payload))


def chat_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def encode_example(tokenizer: Any, prompt: str, answer: str, max_tokens: int) -> dict[str, list[int]]:
    """Token ids and labels with the prompt masked out (loss on the answer only)."""
    safe = tokenizer_neutraliser(tokenizer)
    prompt, answer = safe(prompt), safe(answer)
    prompt_ids: list[int] = tokenizer.apply_chat_template(
        chat_messages(prompt), add_generation_prompt=True, tokenize=True, return_dict=False)
    answer_ids: list[int] = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    prompt_ids = prompt_ids[-(max_tokens - len(answer_ids)):]  # keep the end: the generation prompt
    ids = prompt_ids + answer_ids
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}
