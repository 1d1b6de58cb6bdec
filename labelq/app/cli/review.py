"""``labelq review``: show, approve, reject or edit a curated bucket held for review."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from labelq.app.cli.common import err_console, friendly_errors, settings_of
from labelq.store import open_store


@friendly_errors
def review(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="Task spec name.")],
    version: Annotated[str | None, typer.Argument(help="Bucket version (e.g. v0002); omit to list pending ones.")]
    = None,
    approve: Annotated[bool, typer.Option("--approve", help="Let the trainer take the bucket as it is.")] = False,
    reject: Annotated[str | None, typer.Option("--reject", metavar="REASON", help="Never train this bucket.")]
    = None,
    edits: Annotated[Path | None, typer.Option(
        "--edits", exists=True, dir_okay=False,
        help='JSONL of {"content_hash"|"session_id", "label"} or {..., "drop": true}; applied, then approved.')]
    = None,
    show: Annotated[int, typer.Option(help="Rows of the bucket to print.")] = 20,
) -> None:
    """Review a curated bucket held by curation.require_review: show, approve, reject or edit it."""
    from labelq.spec import load_spec
    from trainer import review as gate
    from trainer.curation import read_rows

    settings = settings_of(ctx)
    store = open_store(settings)
    if version is None:
        waiting = gate.pending(store, task)
        typer.echo("\n".join(waiting) if waiting else f"no bucket of {task} waits for review")
        return
    if sum([approve, reject is not None, edits is not None]) > 1:
        err_console.print("[red]give one of --approve, --reject, --edits[/red]")
        raise typer.Exit(2)
    if approve:
        gate.approve(store, task, version)
        typer.echo(f"{task} {version}: approved; the trainer will take it")
    elif reject is not None:
        gate.reject(store, task, version, reject)
        typer.echo(f"{task} {version}: rejected")
    elif edits is not None:
        changed = gate.apply_edits(store, load_spec(task, settings.specs_dir), version,
                                   gate.parse_edits(edits.read_bytes()))
        typer.echo(f"{task} {version}: {changed.edited} edited, {changed.dropped} dropped; approved")
    else:
        table = Table(title=f"{task} {version} (approve with --approve)")
        for col in ("session_id", "content_hash", "source", "label"):
            table.add_column(col)
        for row in read_rows(store, task, version)[:show]:
            table.add_row(row.session_id, row.content_hash, row.source, row.label)
        Console().print(table)
