"""Batched greedy generation with transformers (optionally through a PEFT adapter).

Used by the trainer's evaluation and by the student's ``transformers``
backend; both get the mean probability of the chosen tokens as a confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from trainer.chat import chat_messages


class Generation(NamedTuple):
    text: str
    confidence: float | None  # mean probability of the generated tokens
    tokens: int


def load_for_generation(base_model: str, adapter_dir: str | None = None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    model = model.to(device)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    return model, tokenizer


def generate_scored(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                    batch_size: int = 32) -> list[Generation]:
    """Greedy answers to ``prompts`` through the chat template, in order, with confidences."""
    import torch

    out: list[Generation] = []
    for start in range(0, len(prompts), batch_size):
        texts = [tokenizer.apply_chat_template(chat_messages(p), add_generation_prompt=True, tokenize=False)
                 for p in prompts[start:start + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            result = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                    output_scores=True, return_dict_in_generate=True)
        new = result.sequences[:, enc["input_ids"].shape[1]:]
        # log-probability of each chosen token under the (unprocessed, greedy) scores
        logprobs = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in result.scores], dim=1)
        chosen = logprobs.gather(2, new.unsqueeze(-1)).squeeze(-1)
        for row, ids in enumerate(new.tolist()):
            n = _length(ids, tokenizer.eos_token_id, tokenizer.pad_token_id)
            # the end-of-answer token counts: a confident stop is part of a confident answer
            counted = min(len(ids), n + 1)
            mean = float(chosen[row, :counted].mean()) if counted else float("-inf")
            out.append(Generation(tokenizer.decode(ids[:n], skip_special_tokens=True).strip(),
                                  math.exp(mean) if counted else None, n))
    return out


def _length(ids: list[int], eos: int, pad: int) -> int:
    for i, token in enumerate(ids):
        if token in (eos, pad):
            return i
    return len(ids)


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
             batch_size: int = 32) -> list[str]:
    """Greedy answers to ``prompts`` through the chat template, in order."""
    return [g.text for g in generate_scored(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                            batch_size=batch_size)]
