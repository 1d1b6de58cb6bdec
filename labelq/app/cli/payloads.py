"""``labelq payloads prune``: delete claim-checked payloads past their retention."""

from __future__ import annotations

from typing import Annotated

import typer

from labelq.app.cli.common import err_console, friendly_errors, print_json_line, settings_of

app = typer.Typer(help="Claim-checked session payloads in the object store (payloads/).", no_args_is_help=True)


@app.command("prune")
@friendly_errors
def payloads_prune(
    ctx: typer.Context,
    older_than_days: Annotated[float | None, typer.Option(
        help="Delete payloads last written longer ago than this (default LABELQ_CLAIM_CHECK_RETENTION_DAYS).",
        min=0)] = None,
    task: Annotated[str | None, typer.Option(help="Only this task's payloads.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    include_parked: Annotated[bool, typer.Option(
        "--include-parked", help="Prune tasks with chunks parked until they have an adapter too (normally "
        "kept: those chunks may wait longer than the retention).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Delete claim-checked payloads older than the retention (run it daily; on S3 a lifecycle rule on
    payloads/ does the same). A session still queued when its payload goes is dead-lettered
    payload_missing: keep the retention above the longest time a chunk may wait. Tasks with chunks
    parked until they have an adapter are skipped (their wait has no bound) unless --include-parked."""
    from labelq.payloads import prune
    from labelq.queue.parking import parked_depths
    from labelq.redis_server import connect
    from labelq.store import open_store
    from labelq.task_registry import known_tasks

    settings = settings_of(ctx)
    keep: list[str] = []
    if not include_parked:
        client = connect(settings)
        keep = sorted(parked_depths(settings, client, known_tasks(settings, client)))
        if keep:
            err_console.print(f"payloads: keeping those of {', '.join(keep)} (chunks parked until an adapter is "
                              "promoted; --include-parked prunes them too)", highlight=False)
    summary = prune(settings, open_store(settings), older_than_days=older_than_days, task=task, dry_run=dry_run,
                    keep_tasks=keep)
    verb = "would delete" if dry_run else "deleted"
    err_console.print(f"payloads: {verb} {summary.deleted:,} ({summary.deleted_bytes:,} bytes), kept {summary.kept:,}",
                      highlight=False)
    if json_out:
        print_json_line(summary.to_dict())
