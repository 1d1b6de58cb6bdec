"""``labelq audit``: every ingested session is labelled, dead-lettered or in flight."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from labelq.app.cli.common import err_console, friendly_errors, print_json_line, settings_of
from labelq.redis_server import connect


@friendly_errors
def audit(ctx: typer.Context,
          json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False
          ) -> None:
    """Check that ingested = labelled + in flight + dead-lettered for each task, and that every
    claimed session was enqueued; exit 1 on any gap."""
    from labelq.audit import audit as run_audit

    settings = settings_of(ctx)
    result = run_audit(settings, connect(settings))
    if json_out:
        print_json_line(result.to_dict())
    else:
        table = Table(title="audit: ingested = labelled + dead-lettered + in flight")
        for col in ("task", "ingested", "labelled", "dead-lettered", "in flight", "gap"):
            table.add_column(col, justify="left" if col == "task" else "right")
        for task, t in result.tasks.items():
            gap = f"[red]{t.gap:,}[/red]" if t.gap else "0"
            table.add_row(task, f"{t.ingested:,}", f"{t.labelled:,}", f"{t.dead_lettered:,}",
                          f"{t.in_flight:,}", gap)
        Console().print(table)
        for task, t in result.tasks.items():
            if t.gap:
                err_console.print(f"[red]{task}: {t.gap:,} sessions unaccounted for[/red]")
            if t.claimed_not_enqueued:
                err_console.print(f"[red]{task}: {t.claimed_not_enqueued:,} sessions claimed by a producer but "
                                  "never enqueued (stopped between the two by a labelq before claims and chunks "
                                  "moved together); a re-ingest calls them duplicates[/red]")
    if not result.ok:
        raise typer.Exit(1)
