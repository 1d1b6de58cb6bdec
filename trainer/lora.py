"""LoRA training with PEFT, top to bottom: config, data, loop, save.

The adapter is saved in the form vLLM loads: no ``modules_to_save``, no added
tokens, ``bias="none"``; its full training config is written beside it, with
the hash of the base it was trained on (``base_hash``, see ``labelq.models``):
students refuse to serve it on another base.
"""

from __future__ import annotations

import importlib.util
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from labelq.logging import get_logger
from labelq.models import TINY, base_kind
from labelq.models import base_hash as model_base_hash
from labelq.prompts import encode_example
from labelq.settings import Settings
from trainer.tiny_model import answer_loss, collate

log = get_logger(__name__)

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class LoraTrainConfig:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(TARGET_MODULES))
    epochs: int = 6
    batch_size: int = 16
    learning_rate: float = 3e-3
    max_tokens: int = 512
    seed: int = 0
    precision: str = "auto"  # auto: bf16 on a GPU, fp32 on a CPU
    qlora: bool = False  # 4-bit base weights (bitsandbytes, GPU only); else falls back to bf16/fp32


# Defaults per kind of base (``labelq.models.base_kind``). The tiny base is 2 layers trained from scratch:
# it takes a large learning rate and many epochs. A real pretrained model (SmolLM2-135M, a 7B) already
# writes English: a smaller rate and fewer passes keep it from forgetting, longer sequences fit its
# longer tokenization of the same session, smaller batches fit its memory.
BASE_DEFAULTS: dict[str, LoraTrainConfig] = {
    TINY: LoraTrainConfig(),
    "pretrained": LoraTrainConfig(epochs=3, batch_size=8, learning_rate=1e-3, max_tokens=1024),
}


def training_config(settings: Settings, base_model: str) -> LoraTrainConfig:
    """The training config for ``base_model``: its kind's defaults, then every ``LABELQ_TRAINER_*`` that is set."""
    overrides: dict[str, Any] = {name: value for name, value in (
        ("learning_rate", settings.trainer_learning_rate), ("epochs", settings.trainer_epochs),
        ("rank", settings.trainer_lora_rank), ("alpha", settings.trainer_lora_alpha),
        ("target_modules", settings.trainer_target_modules), ("max_tokens", settings.trainer_max_tokens),
        ("batch_size", settings.trainer_batch_size)) if value is not None}
    return replace(BASE_DEFAULTS[base_kind(base_model)], qlora=settings.trainer_qlora, **overrides)


@dataclass(frozen=True, slots=True)
class TrainStats:
    """What one training run did; written to ``train_config.json`` and the adapter's ``metrics.json``."""

    steps: int
    final_loss: float
    train_seconds: float
    device: str  # cuda or cpu
    dtype: str  # bfloat16 or float32
    examples: int
    qlora: bool  # 4-bit base weights were used

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_lora(base_model: str, examples: list[tuple[str, str]], out_dir: Path,
               config: LoraTrainConfig | None = None,
               on_step: Callable[[int, int, float], None] | None = None,
               base_hash: str | None = None) -> TrainStats:
    """Train an adapter on ``(prompt, answer)`` pairs; write it to ``out_dir``; return stats.

    ``base_hash``: the base model's hash (default: computed from ``base_model``), kept in ``train_config.json``.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = config or LoraTrainConfig()
    base_hash = base_hash or model_base_hash(base_model)
    started = time.monotonic()
    torch.manual_seed(config.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if (config.precision == "bf16" or (config.precision == "auto" and device == "cuda")) \
        else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    quantized = config.qlora and device == "cuda" and importlib.util.find_spec("bitsandbytes") is not None
    if config.qlora and not quantized:
        log.warning("qlora_unavailable", detail="QLoRA needs a GPU and bitsandbytes; training without it")
    if quantized:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        base: Any = AutoModelForCausalLM.from_pretrained(base_model, device_map={"": 0}, quantization_config=
                                                         BitsAndBytesConfig(load_in_4bit=True,
                                                                            bnb_4bit_quant_type="nf4",
                                                                            bnb_4bit_compute_dtype=dtype))
        base = prepare_model_for_kbit_training(base)
    else:
        base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
        base = base.to(device)
    peft_config = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                             target_modules=config.target_modules, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, peft_config)
    data = [encode_example(tokenizer, p, a, config.max_tokens) for p, a in examples]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    steps_per_epoch = max(1, (len(data) + config.batch_size - 1) // config.batch_size)
    total = steps_per_epoch * config.epochs
    rng = random.Random(config.seed)
    model.train()
    step = 0
    loss_value = float("nan")
    for _ in range(config.epochs):
        order = list(range(len(data)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            step += 1
            for group in optimizer.param_groups:  # warm up, then decay linearly
                group["lr"] = config.learning_rate * min(1.0, step / 10) * max(0.05, 1 - step / total)
            batch = collate([data[i] for i in order[start:start + config.batch_size]], tokenizer.pad_token_id)
            loss = answer_loss(model, {k: v.to(device) for k, v in batch.items()})
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.detach().item()
            if on_step is not None:
                on_step(step, total, loss_value)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    seconds = round(time.monotonic() - started, 2)
    stats = TrainStats(steps=total, final_loss=round(loss_value, 4), train_seconds=seconds, device=device,
                       dtype=str(dtype).removeprefix("torch."), examples=len(examples), qlora=quantized)
    (out_dir / "train_config.json").write_text(json.dumps(
        {"base_model": base_model, "base_hash": base_hash, "base_kind": base_kind(base_model), "lora": asdict(config),
         "stats": stats.to_dict()}, indent=2))
    log.info("lora_trained", **stats.to_dict())
    return stats
