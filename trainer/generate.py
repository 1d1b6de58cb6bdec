"""Batched greedy generation with transformers (optionally through a PEFT adapter)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainer.chat import chat_messages


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


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
             batch_size: int = 32) -> list[str]:
    """Greedy answers to ``prompts`` through the chat template, in order."""
    import torch

    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts = [tokenizer.apply_chat_template(chat_messages(p), add_generation_prompt=True, tokenize=False)
                 for p in prompts[start:start + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        out.extend(tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
                   for row in ids)
    return out
