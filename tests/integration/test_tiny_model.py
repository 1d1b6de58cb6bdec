"""The tiny offline base model and a LoRA adapter on it (transformers, PEFT, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labelq.models import MANIFEST, folder_hash, resolve_base_model
from labelq.prompts import student_prompt
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.synth import generate

pytestmark = [pytest.mark.integration, pytest.mark.slow]
torch = pytest.importorskip("torch")


def held_out(n: int, seed: int = 4242) -> tuple[list[str], list[str]]:
    spec, settings = load_spec("session-label"), Settings()
    sessions = list(generate(n, seed=seed))
    return ([student_prompt(spec, settings, s) for s in sessions], [s["_reference"]["label"] for s in sessions])


def test_tiny_model_is_offline_llama_with_chat_template_and_wordy(tiny_model: Path) -> None:
    from transformers import AutoConfig

    from labelq.engines.transformers_engine import generate as gen
    from labelq.engines.transformers_engine import load_for_generation

    config = AutoConfig.from_pretrained(tiny_model)
    assert config.model_type == "llama"
    assert config.hidden_size // config.num_attention_heads == 64  # vLLM CPU attention needs 64
    tokenizer_config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    chat_template = tokenizer_config.get("chat_template") or (tiny_model / "chat_template.jinja").read_text()
    assert "<|im_start|>" in chat_template
    model, tokenizer = load_for_generation(str(tiny_model))
    prompts, refs = held_out(16)
    answers = gen(model, tokenizer, prompts, max_new_tokens=48)
    assert sum(len(a.split()) for a in answers) / len(answers) >= 12  # the wordy baseline
    # It learned the content: many answers carry the exact reference facts somewhere inside
    # (about 40% measured on 200 held-out sessions; chance is about zero).
    assert sum(r.lower() in a.lower() for a, r in zip(answers, refs, strict=True)) >= 4


def test_lora_adapter_is_vllm_shaped_and_learns_the_style(tiny_model: Path, tmp_path: Path) -> None:
    from labelq.engines.transformers_engine import generate as gen
    from labelq.engines.transformers_engine import load_for_generation
    from trainer.evaluate import score
    from trainer.lora import train_lora

    spec, settings = load_spec("session-label"), Settings()
    train = [(student_prompt(spec, settings, s), s["_reference"]["label"]) for s in generate(300, seed=5)]
    stats = train_lora(str(tiny_model), train, tmp_path / "adapter")
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["bias"] == "none" and not adapter_config.get("modules_to_save")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "adapter" / "added_tokens.json").exists()
    train_config = json.loads((tmp_path / "adapter" / "train_config.json").read_text())
    assert train_config["stats"] == stats.to_dict()
    assert train_config["base_hash"] == json.loads((tiny_model / MANIFEST).read_text())["base_hash"]
    prompts, refs = held_out(100)
    base, tok = load_for_generation(str(tiny_model))
    tuned, tok2 = load_for_generation(str(tiny_model), str(tmp_path / "adapter"))
    before = score(gen(base, tok, prompts, max_new_tokens=48), refs, spec.contract)
    after = score(gen(tuned, tok2, prompts, max_new_tokens=24), refs, spec.contract)
    assert before.within_contract <= 0.1 and after.within_contract >= 0.9
    assert after.mean_words <= 8 < before.mean_words
    assert after.exact_match > before.exact_match


def test_labelq_model_tiny_writes_a_manifest_with_the_hash_and_tiny_then_resolves(tmp_path: Path) -> None:
    """A 2-step build (about 10 s): the manifest's hash is over the model's files; `tiny` resolves to it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELQ_")}
    env["LABELQ_STATE_DIR"] = str(tmp_path / "state")

    def build() -> dict[str, str]:
        done = subprocess.run([sys.executable, "-m", "labelq.app.cli.main", "model", "tiny", "--steps", "2", "--json"],
                              capture_output=True, env=env, timeout=300, check=True)
        out: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
        return out

    built = build()
    folder = Path(built["path"])
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["base_hash"] == built["base_hash"] == folder_hash(folder)[0]
    assert manifest["kind"] == "tiny" and manifest["builder"]["config"]["train_steps"] == 2
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(manifest["files"])
    assert resolve_base_model(Settings(state_dir=tmp_path / "state", student_model="tiny")) == str(folder)
    assert build()["base_hash"] == built["base_hash"]
    assert json.loads((folder / MANIFEST).read_text())["created_at"] == manifest["created_at"]  # found, not rebuilt


def test_session_tiny_model_has_its_manifest(tiny_model: Path) -> None:
    manifest = json.loads((tiny_model / MANIFEST).read_text())
    assert manifest["base_hash"] == folder_hash(tiny_model)[0]
