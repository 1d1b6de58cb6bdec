"""``labelq adapter`` and ``labelq curate``: adapter versions and curated buckets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from labelq.app.cli.common import err_console, friendly_errors, print_json_line, settings_of
from labelq.redis_server import connect
from labelq.registry import Registry
from labelq.store import open_store

adapter_app = typer.Typer(help="List, promote, roll back and pin adapter versions (running students follow).",
                          no_args_is_help=True)


def _registry(ctx: typer.Context) -> Registry:
    settings = settings_of(ctx)
    return Registry(settings, connect(settings), open_store(settings))


@adapter_app.command("list")
@friendly_errors
def adapter_list(ctx: typer.Context, task: Annotated[str, typer.Argument(help="Task spec name.")],
                 json_out: Annotated[bool, typer.Option("--json", help="Print JSON (last line).")] = False) -> None:
    """Adapter versions in the store with their metrics, and which one serves."""
    reg = _registry(ctx)
    state = reg.state(task)
    rows: list[dict[str, Any]] = [{"version": v, "metrics": reg.metrics(task, v)} for v in reg.versions(task)]
    if json_out:
        print_json_line({"task": task, **state, "serving": reg.serving(task), "versions": rows})
        return
    table = Table(title=f"adapters for {task} (serving: v{reg.serving(task)})")
    for col in ("version", "exact_match", "cosine", "within_contract", "state"):
        table.add_column(col)
    for row in rows:
        m = row["metrics"].get("adapter", row["metrics"])
        flags = [f for f, on in (("current", row["version"] == state["current"]),
                                 ("pinned", row["version"] == state["pinned"])) if on]
        table.add_row(f"v{row['version']}", str(m.get("exact_match", "-")), str(m.get("cosine", "-")),
                      str(m.get("within_contract", "-")), ", ".join(flags))
    Console().print(table)


@adapter_app.command("promote")
@friendly_errors
def adapter_promote(ctx: typer.Context, task: Annotated[str, typer.Argument()],
                    version: Annotated[int, typer.Argument(min=1)]) -> None:
    """Make VERSION the current adapter (students switch before their next chunk)."""
    _registry(ctx).promote(task, version)
    typer.echo(f"{task}: v{version} promoted")


@adapter_app.command("rollback")
@friendly_errors
def adapter_rollback(ctx: typer.Context, task: Annotated[str, typer.Argument()]) -> None:
    """Return to the adapter promoted before the current one."""
    typer.echo(f"{task}: rolled back to v{_registry(ctx).rollback(task)}")


@adapter_app.command("pin")
@friendly_errors
def adapter_pin(ctx: typer.Context, task: Annotated[str, typer.Argument()],
                version: Annotated[int | None, typer.Argument(min=1, help="Omit with --clear.")] = None,
                clear: Annotated[bool, typer.Option("--clear", help="Remove the pin.")] = False) -> None:
    """Serve VERSION whatever gets promoted, until --clear."""
    if version is None and not clear:
        err_console.print("[red]give a VERSION to pin, or --clear[/red]")
        raise typer.Exit(2)
    _registry(ctx).pin(task, None if clear else version)
    typer.echo(f"{task}: pin cleared" if clear else f"{task}: pinned to v{version}")


@friendly_errors
def curate(ctx: typer.Context, task: Annotated[str, typer.Argument(help="Task spec name.")],
           json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON (last line).")] = False
           ) -> None:
    """Build the next curated bucket (train/val split, manifest, _READY) from teacher and human labels."""
    from labelq.spec import load_spec
    from trainer.curation import curate as build

    settings = settings_of(ctx)
    manifest = build(open_store(settings), load_spec(task, settings.specs_dir),
                     require_review=settings.curation_require_review)
    if manifest is None:
        err_console.print(f"nothing to curate for {task}: no usable teacher or human labels yet")
        raise typer.Exit(1)
    err_console.print(f"curated {task} {manifest.version}: {manifest.counts.to_dict()}, dropped {manifest.dropped}"
                      + (" (waits for `labelq review`)" if settings.curation_require_review else ""))
    if json_out:
        print_json_line(manifest.summary())


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
