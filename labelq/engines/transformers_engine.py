"""Batched greedy generation with transformers (optionally through a PEFT adapter).

Used by the trainer's evaluation (and its confidence calibration) and by the
student's ``transformers`` backend; both get the confidence every backend
reports (``labelq.engines.base.mean_prob``): the geometric mean probability of
the chosen tokens, end of answer included, from the model's raw logits (as
vLLM's default ``raw_logprobs``), not from scores a logits processor changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from labelq.engines.base import Adapter, Generation, fit_prompts, mean_prob
from labelq.prompts import chat_messages
from labelq.settings import Settings
from labelq.special_tokens import neutralise_all


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
                 for p in neutralise_all(tokenizer, prompts[start:start + batch_size])]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            result = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                    output_logits=True, return_dict_in_generate=True)
        new = result.sequences[:, enc["input_ids"].shape[1]:]
        # log-probability of each chosen token under the raw logits (what vLLM reports by default)
        logprobs = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in result.logits], dim=1)
        chosen = logprobs.gather(2, new.unsqueeze(-1)).squeeze(-1)
        for row, ids in enumerate(new.tolist()):
            n = _length(ids, tokenizer.eos_token_id, tokenizer.pad_token_id)
            # the end-of-answer token counts: a confident stop is part of a confident answer
            counted = min(len(ids), n + 1)
            out.append(Generation(tokenizer.decode(ids[:n], skip_special_tokens=True).strip(),
                                  mean_prob(chosen[row, :counted].tolist()), n))
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


class TransformersBackend:
    name = "transformers"

    def __init__(self, settings: Settings, model: str, batch_size: int = 64) -> None:
        self.model = model
        self._batch_size = batch_size
        self._model, self._tokenizer = load_for_generation(model)
        self._max_len = int(getattr(self._model.config, "max_position_embeddings", None) or 4096)
        self._peft: Any = None
        self._loaded: list[str] = []

    def _use(self, adapter: Adapter) -> Any:
        from peft import PeftModel

        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._model, adapter.path, adapter_name=adapter.name)
            self._peft.eval()
            self._loaded.append(adapter.name)
        elif adapter.name not in self._loaded:
            self._peft.load_adapter(adapter.path, adapter_name=adapter.name)
            self._loaded.append(adapter.name)
        self._peft.set_adapter(adapter.name)
        while len(self._loaded) > 2:  # evict the oldest unused adapter
            old = next(n for n in self._loaded if n != adapter.name)
            self._peft.delete_adapter(old)
            self._loaded.remove(old)
        return self._peft

    def generate(self, prompts: Sequence[str], adapter: Adapter | None, max_new_tokens: int,
                 json_schema: dict[str, Any] | None = None) -> list[Generation]:
        # No constrained decoding here: an answer off the schema fails the contract check like any other.
        prompts = fit_prompts(self._tokenizer, prompts, self._max_len - max_new_tokens)
        if adapter is None:
            if self._peft is not None:
                with self._peft.disable_adapter():
                    return generate_scored(self._peft, self._tokenizer, prompts, max_new_tokens=max_new_tokens,
                                           batch_size=self._batch_size)
            return generate_scored(self._model, self._tokenizer, prompts, max_new_tokens=max_new_tokens,
                                   batch_size=self._batch_size)
        return generate_scored(self._use(adapter), self._tokenizer, prompts, max_new_tokens=max_new_tokens,
                               batch_size=self._batch_size)

    def close(self) -> None:
        self._peft = self._model = None
