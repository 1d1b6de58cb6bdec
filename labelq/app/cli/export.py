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
    tmp_dir: Annotated[Path | None, typer.Option(
        "--tmp-dir", file_okay=False, help="Folder for the sorted runs (about the export's size; default: the "
        "system temp folder).")] = None,
) -> None:
    """Write the latest label per session to one JSONL or Parquet file (streamed: memory does not grow with
    the number of labels)."""
    from labelq.export import export_latest
    from labelq.store import open_store

    settings = settings_of(ctx)
    written, count = export_latest(open_store(settings), out, fmt, tasks=task, sources=source, since=since,
                                   until=until, tmp_dir=tmp_dir)
    err_console.print(f"{count:,} labels written to {out} ({written})", highlight=False)
