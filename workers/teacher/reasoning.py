"""Reasoning models (o-series, gpt-5): how long a request may run, and how many output tokens it is billed.

A reasoning model thinks in hidden tokens before it answers. OpenAI bills them
as output tokens and counts them inside ``usage.completion_tokens``;
``completion_tokens_details.reasoning_tokens`` is a breakdown of that number,
not an addition. So:

* a request to a reasoning model caps answer and thinking together with
  ``max_completion_tokens`` (the spec's ``max_output_tokens`` plus
  ``teacher_reasoning_tokens``), and the budget reserves that whole cap at the
  output price: the worst case covers the thinking;
* billed output is ``completion_tokens``, reasoning counted once; a server
  that reports reasoning *beside* ``completion_tokens`` (more reasoning than
  completion, or ``total_tokens`` = prompt + completion + reasoning) has it added.

Reasoning models take neither ``max_tokens`` nor a temperature other than
their default, so neither is sent to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labelq.settings import Settings
from labelq.spec import TaskSpec

REASONING_FAMILIES = ("o1", "o3", "o4", "gpt-5")
# Models a provider told us take ``max_completion_tokens`` (a 400 ``unsupported_parameter`` for
# ``max_tokens``): a deployment name the family rule cannot see through. Per process, kept for its life.
LEARNED_REASONING_MODELS: set[str] = set()
DEFAULT_REASONING_TOKENS = 2048  # thinking room for a one-line label when teacher_reasoning_tokens is unset


def is_reasoning_model(settings: Settings, model: str) -> bool:
    """An o-series or gpt-5 model (dated snapshots, mini and nano too), or any model once
    ``teacher_reasoning_tokens`` is above 0 (an Azure deployment name says nothing about its model)."""
    if settings.teacher_reasoning_tokens or model in LEARNED_REASONING_MODELS:
        return True
    return any(model == family or model.startswith(family + "-") for family in REASONING_FAMILIES)


def output_token_cap(settings: Settings, spec: TaskSpec, model: str) -> int:
    """The most output tokens one request may be billed for: the answer, plus thinking for a reasoning model."""
    cap = spec.teacher.max_output_tokens
    if is_reasoning_model(settings, model):
        extra = settings.teacher_reasoning_tokens
        cap += DEFAULT_REASONING_TOKENS if extra is None else extra
    return cap


def learn_reasoning_model(model: str) -> None:
    """The provider refused ``max_tokens`` for ``model``: from now on it is a reasoning model (its
    requests carry ``max_completion_tokens`` and no temperature; its budget reserves thinking room)."""
    LEARNED_REASONING_MODELS.add(model)


def refuses_max_tokens(error_body: object) -> bool:
    """A 400 whose body says ``max_tokens`` is not supported (OpenAI: ``code: unsupported_parameter``,
    ``param: max_tokens``; Azure words it in the message)."""
    error = error_body.get("error", error_body) if isinstance(error_body, dict) else None
    if not isinstance(error, dict):
        return False
    named = error.get("param") == "max_tokens" or "'max_tokens'" in str(error.get("message", ""))
    return named and error.get("code") in ("unsupported_parameter", None)


def length_params(settings: Settings, model: str, cap: int, temperature: float) -> dict[str, Any]:
    """The request's length cap (and temperature, for models that take one)."""
    if is_reasoning_model(settings, model):
        return {"max_completion_tokens": cap}
    return {"max_tokens": cap, "temperature": temperature}


def usage_tokens(usage: Mapping[str, Any]) -> tuple[int, int]:
    """``(input_tokens, output_tokens)`` to bill from a chat completion's ``usage``, reasoning counted once.

    Raises KeyError, TypeError or ValueError when the usage has no token counts (a malformed answer).
    """
    prompt = int(usage["prompt_tokens"])
    completion = int(usage["completion_tokens"])
    details = usage.get("completion_tokens_details") or {}
    reasoning = int(details.get("reasoning_tokens") or 0)
    total = usage.get("total_tokens")
    beside = reasoning > completion or (reasoning > 0 and total is not None
                                        and int(total) == prompt + completion + reasoning)
    return prompt, completion + reasoning if beside else completion
