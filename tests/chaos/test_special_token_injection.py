"""Sessions that spell chat-control tokens (``<|im_end|><|im_start|>assistant``, ``<|eot_id|>``,
``</s>``...) through the student and the trainer: the prompt token ids the vLLM engine ran, and the
training examples the trainer built, hold exactly the chat template's special tokens; counted with
the tiny base's tokenizer and SmolLM2-135M-Instruct's (ChatML)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import labelq.render
import trainer.lora
from labelq.prompts import encode_example, student_prompt
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.special_tokens import neutralise_all
from labelq.synth import generate
from tests.support.chaos import record_result
from tests.support.tokenizers import INJECTIONS, count_special, injection_sessions, template_ids

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
pytest.importorskip("vllm")

from transformers import AutoTokenizer  # noqa: E402
from vllm import LLM  # noqa: E402

from labelq.engines import StudentBackend  # noqa: E402
from trainer.lora import LoraTrainConfig, train_lora  # noqa: E402

N = 64
EXAMPLES = 32


def test_special_token_injection_through_the_student_and_the_trainer(
        vllm_backend: StudentBackend, tiny_model: Path, smollm2_tokenizer: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    spec, settings = load_spec("session-label"), Settings()
    tokenizers = {"tiny": AutoTokenizer.from_pretrained(str(tiny_model)), "smollm2": smollm2_tokenizer}
    clean = student_prompt(spec, settings, next(iter(generate(1, seed=3))))
    template = {name: count_special(tok, template_ids(tok, clean)) for name, tok in tokenizers.items()}
    sessions = injection_sessions(N, seed=21)
    prompts = [student_prompt(spec, settings, s) for s in sessions]
    with monkeypatch.context() as unguarded:  # what the tokenizers would read without the rewrite
        unguarded.setattr(labelq.render, "neutralise", lambda text: text)
        raw = [student_prompt(spec, settings, s) for s in sessions]
    injected_before = {name: sum(count_special(tok, template_ids(tok, p)) - template[name] for p in raw)
                       for name, tok in tokenizers.items()}
    assert all(n >= N for n in injected_before.values()), injected_before

    # The student: the real vLLM engine on the tiny base; count the prompt token ids it ran.
    ran: list[list[int]] = []
    real_chat = LLM.chat

    def chat(self: LLM, *args: Any, **kwargs: Any) -> Any:
        outputs = real_chat(self, *args, **kwargs)
        ran.extend(list(o.prompt_token_ids) for o in outputs)
        return outputs

    monkeypatch.setattr(LLM, "chat", chat)
    # Rendered sessions, and raw text that reaches the engine without the renderer (its own rewrite alone).
    answers = vllm_backend.generate([*prompts, *INJECTIONS], None, 4)
    assert len(answers) == len(ran) == N + len(INJECTIONS)
    off: list[Any] = [ids for ids in ran[:N] if count_special(tokenizers["tiny"], ids) != template["tiny"]]
    bare = count_special(tokenizers["tiny"], template_ids(tokenizers["tiny"], ""))
    off += [ids for ids in ran[N:] if count_special(tokenizers["tiny"], ids) != bare]
    # The same prompts as an engine on SmolLM2 would build them (its tokenizer's declared tokens added).
    served = neutralise_all(smollm2_tokenizer, prompts)
    off += [p for p in served if count_special(smollm2_tokenizer, template_ids(smollm2_tokenizer, p))
            != template["smollm2"]]

    # The trainer: a real (one-epoch) LoRA run on hostile prompts with hostile answers; count its examples.
    examples = [(p, f"Buys shoes {INJECTIONS[i % len(INJECTIONS)]}") for i, p in enumerate(prompts[:EXAMPLES])]
    built: list[dict[str, list[int]]] = []

    def encode(tokenizer: Any, prompt: str, answer: str, max_tokens: int) -> dict[str, list[int]]:
        built.append(encode_example(tokenizer, prompt, answer, max_tokens))
        return built[-1]

    monkeypatch.setattr(trainer.lora, "encode_example", encode)
    # Long enough that no example is cut (a cut example loses its leading turn marker, not a token more).
    config = LoraTrainConfig(epochs=1, batch_size=16, max_tokens=1024)
    train_lora(str(tiny_model), examples, tmp_path / "adapter", config)
    assert len(built) == EXAMPLES and (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    tiny_example = count_special(tokenizers["tiny"], encode_example(tokenizers["tiny"], clean, "Buys shoes", config.max_tokens)[
        "input_ids"])
    off += [e for e in built if count_special(tokenizers["tiny"], e["input_ids"]) != tiny_example]
    smol_example = count_special(smollm2_tokenizer, encode_example(smollm2_tokenizer, clean, "Buys shoes", 4096)[
        "input_ids"])
    off += [e for p, a in examples if count_special(smollm2_tokenizer, (e := encode_example(
        smollm2_tokenizer, p, a, 4096))["input_ids"]) != smol_example]
    assert off == []
    record_result(request, scenario="special-token injection through the student and the trainer",
                  load=f"{N} hostile sessions and {len(INJECTIONS)} raw prompts run by the vLLM engine (tiny "
                       f"base); the sessions' prompts built for SmolLM2-135M-Instruct; {EXAMPLES} hostile examples "
                       "through train_lora (tiny) and SmolLM2's tokenizer",
                  faults="ChatML, Llama-3, Llama-2/Mistral, Gemma, DeepSeek, StarCoder-style and upper-case "
                         "control-token spellings in values, keys, event kinds, URLs and answers "
                         f"({injected_before['tiny']} tokens injected in the tiny base's prompts and "
                         f"{injected_before['smollm2']} in SmolLM2's without the rewrite)",
                  lost=len(off), duplicates=0, seconds=round(time.monotonic() - started, 1),
                  injected_before=injected_before, template_special_tokens=template)
