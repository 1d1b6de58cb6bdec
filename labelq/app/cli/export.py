"""``labelq export``: the latest label per session to JSONL or Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelq.app.cli.common import err_console, friendly_errors, settings_of


@friendly_errors
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Output file: .jsonl, or .parquet for Parquet.")],
    task: Annotated[list[str] | None, typer.Option(help="Only these tasks (repeatable).")] = None,
    source: Annotated[list[str] | None, typer.Option(help="Only teacher, student or human (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="Labels created at or after this date/time (ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Labels created before this date/time (ISO).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl or parquet (default: from the name).")]
    = None,
) -> None:
    """Write the latest label per session to one JSONL or Parquet file."""
    from labelq.export import latest_labels, write_export
    from labelq.store import open_store

    settings = settings_of(ctx)
    records = latest_labels(open_store(settings), tasks=task, sources=source, since=since, until=until)
    written = write_export(records, out, fmt)
    err_console.print(f"{len(records):,} labels written to {out} ({written})", highlight=False)
