"""``labelq model tiny``: a small Llama-architecture base model built entirely offline.

1. a byte-level BPE tokenizer trained with ``tokenizers`` on synthetic
   sessions and prose, saved with a ChatML chat template;
2. a Llama config with head_dim 64 (what vLLM's CPU attention supports);
3. a minute or two of CPU pre-training: describe a session in long, wordy
   prose (the real-world story: a base model answers in 15 words where 8 are
   wanted), with the spec's student prompt in the chat template.

Saved under ``<state_dir>/models/tiny-<config hash>/`` with a manifest
(``labelq_model.json``: the base hash over its files, and this config), where
transformers and vLLM both load it by path; ``<state_dir>/models/tiny.json``
then points ``LABELQ_STUDENT_MODEL=tiny`` at it (see ``labelq.models``, which
only resolves: only ``labelq model tiny``, the demo and tests build). Any hub
model replaces it by name.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labelq.logging import get_logger
from labelq.models import MANIFEST, models_dir, point_tiny_at, read_manifest, write_manifest
from labelq.prompts import encode_example, student_prompt
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.synth import REFERENCE_FIELD, generate
from trainer.wordy import wordy_description

log = get_logger(__name__)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


@dataclass(frozen=True)
class TinyConfig:
    """Everything that decides the tiny model; its hash names the cache folder."""

    # Sized for about two and a half minutes on 2 CPU cores (~0.12 s a step: length-bucketed
    # batches, logits only for answer tokens). A LoRA adapter on 300 labels then reaches
    # exact match 0.955 on held-out sessions (bench/quality.py); 600 steps gave 0.71.
    vocab_size: int = 3000
    hidden_size: int = 128
    layers: int = 2
    heads: int = 2  # head_dim = 128 / 2 = 64, what vLLM's CPU attention supports
    kv_heads: int = 2
    intermediate_size: int = 384
    max_positions: int = 1024
    corpus_sessions: int = 6000
    train_steps: int = 1200
    batch_size: int = 16
    learning_rate: float = 3e-3
    max_tokens: int = 384
    seed: int = 0
    version: int = 4  # bump when the corpus or the training changes

    @property
    def name(self) -> str:
        import hashlib

        digest = hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=4)
        return f"tiny-{digest.hexdigest()}"


def tiny_model_dir(settings: Settings, config: TinyConfig | None = None) -> Path:
    """The folder of the tiny base built from ``config``: named by the config's hash and the
    ``session-label`` spec's prompt version, since the pre-training corpus is rendered through
    that spec's student prompt (a changed prompt must not reuse a base trained on the old one)."""
    prompt_version = load_spec("session-label", settings.specs_dir).prompt_version
    return models_dir(settings) / f"{(config or TinyConfig()).name}-{prompt_version}"


def _corpus(settings: Settings, config: TinyConfig) -> list[tuple[str, str]]:
    spec = load_spec("session-label", settings.specs_dir)
    rng = random.Random(config.seed)
    pairs = []
    for session in generate(config.corpus_sessions, seed=10_000 + config.seed):
        label = session[REFERENCE_FIELD]["label"]
        pairs.append((student_prompt(spec, settings, session), wordy_description(label, rng)))
    return pairs


def train_tokenizer(texts: list[str], config: TinyConfig, out: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|pad|>", unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_tiny_model(settings: Settings, config: TinyConfig | None = None, *, force: bool = False,
                     on_step: Callable[[int, int, float], None] | None = None) -> Path:
    """Build (or reuse) the tiny base model, write its manifest, point ``tiny`` at it; return its directory."""
    config = config or TinyConfig()
    final = tiny_model_dir(settings, config)
    if (final / "config.json").exists() and not force:
        if read_manifest(final) is None:  # built before manifests existed: hash it now
            legacy = final / "labelq_tiny.json"
            write_manifest(final, kind="tiny", builder=json.loads(legacy.read_text()) if legacy.exists()
                           else {"config": asdict(config)})
        point_tiny_at(settings, final)
        return final
    _pretrain(settings, config, final, on_step, force)
    point_tiny_at(settings, final)
    return final


def _pretrain(settings: Settings, config: TinyConfig, final: Path,
              on_step: Callable[[int, int, float], None] | None, force: bool = False) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    started = time.monotonic()
    torch.manual_seed(config.seed)
    # Each build its own work folder: two builds at once (two tests sessions, two `labelq model tiny`)
    # must not write into or remove each other's files.
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    pairs = _corpus(settings, config)
    tokenizer = train_tokenizer([p for p, _ in pairs] + [a for _, a in pairs], config, work)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.layers,
        num_attention_heads=config.heads, num_key_value_heads=config.kv_heads,
        intermediate_size=config.intermediate_size, max_position_embeddings=config.max_positions,
        head_dim=config.hidden_size // config.heads, tie_word_embeddings=True, rms_norm_eps=1e-5,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(model_config)
    examples = [encode_example(tokenizer, p, a, config.max_tokens) for p, a in pairs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    rng = random.Random(config.seed)
    batches: list[list[dict[str, list[int]]]] = []
    model.train()
    for step in range(1, config.train_steps + 1):
        lr = config.learning_rate * min(1.0, step / 50) * max(0.05, 1 - step / config.train_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if not batches:
            batches = length_batches(examples, config.batch_size, rng)
        batch = collate(batches.pop(), tokenizer.pad_token_id)
        loss = answer_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step, config.train_steps, loss.detach().item())
    model.eval()
    model.save_pretrained(work, safe_serialization=True)
    manifest = write_manifest(work, kind="tiny", builder={
        "config": asdict(config), "train_seconds": round(time.monotonic() - started, 1)})
    if read_manifest(final) is not None and not force:  # another build of the same config finished first
        shutil.rmtree(work, ignore_errors=True)
        return
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)  # appears whole or not at all (the manifest inside it)
    log.info("tiny_model_built", path=str(final), base_hash=manifest["base_hash"], manifest=MANIFEST,
             seconds=round(time.monotonic() - started, 1))


def length_batches(examples: list[dict[str, list[int]]], size: int,
                   rng: random.Random) -> list[list[dict[str, list[int]]]]:
    """One pass over ``examples`` in batches of similar length (little padding), in random order."""
    order = sorted(examples, key=lambda e: len(e["input_ids"]) + rng.uniform(0, 24))
    batches = [order[i:i + size] for i in range(0, len(order) - size + 1, size)]
    rng.shuffle(batches)
    return batches


def answer_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy over the answer tokens, with logits computed for those positions only.

    The prompt is most of every sequence and carries no loss; skipping its
    vocabulary projection saves about a third of each training step on a CPU.
    Works for a causal LM and for a PEFT model around one (LoRA layers sit inside).
    """
    import torch.nn.functional as F

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = causal.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def collate(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors; padding is masked in attention and loss."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
