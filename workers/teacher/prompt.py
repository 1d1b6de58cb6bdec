"""Teacher prompts: pure functions of a task spec and a rendered session."""

from __future__ import annotations

from labelq.spec import TaskSpec

Messages = list[dict[str, str]]


def build_messages(spec: TaskSpec, rendered: str) -> Messages:
    return [
        {"role": "system", "content": spec.teacher.system_prompt},
        {"role": "user", "content": spec.teacher.user_template.replace("{session}", rendered)},
    ]


def repair_messages(messages: Messages, raw_answer: str, instruction: str) -> Messages:
    """The conversation for the one repair request: the bad answer, then what was wrong."""
    return [*messages, {"role": "assistant", "content": raw_answer},
            {"role": "user", "content": instruction}]


def estimate_prompt_tokens(messages: Messages) -> int:
    """Conservative (3 characters a token, plus per-message overhead): budgets must not undershoot."""
    return sum(len(m["content"]) // 3 + 8 for m in messages)
