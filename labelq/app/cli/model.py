"""``labelq model``: base models for the student."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from labelq.app.cli.common import (
    err_console,
    friendly_errors,
    print_json_line,
    progress_bar,
    settings_of,
)
from labelq.models import read_manifest

app = typer.Typer(help="Base models for the student (the tiny offline one, or any hub model).",
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
    try:
        from trainer.tiny_model import TinyConfig, build_tiny_model
    except ImportError as exc:
        err_console.print(f"[red]needs the trainer extra:[/red] pip install 'labelq[trainer]' ({exc})")
        raise typer.Exit(2) from None
    config = TinyConfig() if steps is None else replace(TinyConfig(), train_steps=steps)
    with progress_bar(total_items=config.train_steps) as progress:
        bar = progress.add_task("pre-train tiny base", total=config.train_steps, info="")
        path = build_tiny_model(
            settings_of(ctx), config, force=force,
            on_step=lambda step, total, loss: progress.update(bar, completed=step, info=f"loss {loss:.3f}"))
    manifest = read_manifest(path) or {}
    err_console.print(f"tiny base model: {path}", soft_wrap=True)
    err_console.print(f"base hash: {manifest.get('base_hash')}", soft_wrap=True)
    if json_out:
        print_json_line({"path": str(path), "name": path.name, "base_hash": manifest.get("base_hash")})
