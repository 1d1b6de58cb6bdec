"""A hostile session's student prompt and training example hold exactly the chat template's special
tokens, counted by real tokenizers: the tiny base's and SmolLM2-135M-Instruct's (ChatML, from its GGUF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelq.prompts import encode_example, student_prompt
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.special_tokens import (
    DEFAULT_SPECIAL_TOKENS,
    declared_special_tokens,
    neutralise,
    neutralise_all,
)
from labelq.synth import generate
from tests.support.tokenizers import (
    INJECTIONS,
    count_special,
    injection_sessions,
    special_ids,
    template_ids,
)

pytestmark = pytest.mark.integration
pytest.importorskip("transformers")


@pytest.fixture(params=["tiny", "smollm2"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    if request.param == "smollm2":
        return request.getfixturevalue("smollm2_tokenizer")
    from transformers import AutoTokenizer

    tiny_model: Path = request.getfixturevalue("tiny_model")
    return AutoTokenizer.from_pretrained(str(tiny_model))


def test_every_declared_token_is_plain_text_once_escaped(tokenizer: Any) -> None:
    declared = declared_special_tokens(tokenizer)
    assert {"<|im_start|>", "<|im_end|>"} <= declared
    for token in sorted(declared | set(DEFAULT_SPECIAL_TOKENS)):
        raw = tokenizer(token, add_special_tokens=False)["input_ids"]
        safe = tokenizer(neutralise(token, declared), add_special_tokens=False)["input_ids"]
        assert token not in declared or count_special(tokenizer, raw) == 1, token  # the tokenizer reads it as one
        assert count_special(tokenizer, safe) == 0, (token, neutralise(token, declared))


def test_hostile_prompts_hold_only_the_templates_special_tokens(tokenizer: Any) -> None:
    spec, settings = load_spec("session-label"), Settings()
    clean = template_ids(tokenizer, student_prompt(spec, settings, next(iter(generate(1, seed=3)))))
    expected = count_special(tokenizer, clean)
    assert expected >= 2  # the template's own turn markers
    sessions = injection_sessions(40, seed=11)
    prompts = neutralise_all(tokenizer, [student_prompt(spec, settings, s) for s in sessions])  # the engines' step
    counts = [count_special(tokenizer, template_ids(tokenizer, p)) for p in prompts]
    assert counts == [expected] * len(sessions)
    # Without the rewrite the tokenizer reads the spellings as its tokens (what the test guards against).
    injected = count_special(tokenizer, template_ids(tokenizer, "\n".join(INJECTIONS)))
    assert injected >= expected + 9


def test_training_examples_hold_only_the_templates_special_tokens(tokenizer: Any) -> None:
    spec, settings = load_spec("session-label"), Settings()
    clean = encode_example(tokenizer, student_prompt(spec, settings, next(iter(generate(1, seed=3)))),
                           "Searches running shoes", 4096)
    expected = count_special(tokenizer, clean["input_ids"])
    wanted = special_ids(tokenizer)
    for i, session in enumerate(injection_sessions(20, seed=12)):
        answer = f"Buys shoes {INJECTIONS[i % len(INJECTIONS)]}"  # a label that carries spellings too
        example = encode_example(tokenizer, student_prompt(spec, settings, session), answer, 4096)
        assert count_special(tokenizer, example["input_ids"]) == expected
        answer_ids = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
        assert [t for t in answer_ids if t in wanted] == [tokenizer.eos_token_id]  # only the end of the answer


def test_the_transformers_engine_feeds_the_model_only_the_templates_special_tokens(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The student's transformers backend and the trainer's evaluation (both ``generate_scored``)."""
    from labelq.engines.transformers_engine import generate_scored, load_for_generation

    model, tok = load_for_generation(str(tiny_model))
    spec, settings = load_spec("session-label"), Settings()
    expected = count_special(tok, template_ids(tok, student_prompt(spec, settings, next(iter(generate(1, seed=3))))))
    rows: list[list[int]] = []
    real_generate = model.generate

    def spy(**kwargs: Any) -> Any:
        rows.extend(kwargs["input_ids"].tolist())
        return real_generate(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    # Rendered sessions, and raw text that reaches the engine without the renderer (its own rewrite alone).
    prompts = [student_prompt(spec, settings, s) for s in injection_sessions(8, seed=13)] + list(INJECTIONS)
    assert len(generate_scored(model, tok, prompts, max_new_tokens=2)) == len(prompts)
    counts = [count_special(tok, [i for i in row if i != tok.pad_token_id]) for row in rows]
    assert counts == [count_special(tok, template_ids(tok, ""))] * len(prompts) and expected == counts[0]
