"""``labelq ingest``: stream sessions into the queues."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from labelq.app.cli.common import (
    EXIT_STOPPED,
    err_console,
    friendly_errors,
    print_json_line,
    progress_bar,
    settings_of,
)
from labelq.settings import QUEUES
from labelq.stopping import stop_on_sigterm
from producer.ingest import IngestSummary
from producer.run import run_ingest
from producer.sources import source_sizes


@friendly_errors
def ingest(
    ctx: typer.Context,
    sources: Annotated[list[str], typer.Argument(
        help="JSONL or JSON-array files (optionally .gz), '-' for stdin, or s3://bucket/prefix.")],
    task: Annotated[str | None, typer.Option(help="Task spec the sessions are for.")] = None,
    queue: Annotated[str | None, typer.Option(
        help=f"Force every session to one queue ({', '.join(q for q in QUEUES if q != 'trainer')}).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON summary as the last line.")] = False,
) -> None:
    """Validate, dedupe, route and chunk sessions into the queues, with backpressure.

    Bad sessions go to the dead-letter store with their reason; the exit status
    is non-zero only when Redis or the store cannot be reached (1), the
    configuration is wrong (2), or SIGTERM stopped the run before the end of
    its input (3: the summary is printed; run the same command again to
    enqueue the rest, nothing is enqueued twice).
    """
    settings = settings_of(ctx)
    task = task or settings.default_task
    total = source_sizes(sources)
    with progress_bar(bytes_total=total) as progress:
        bar = progress.add_task(f"ingest {task}", total=total, info="")

        def on_pause(q: str, depth: int) -> None:
            progress.update(bar, info=f"[yellow]paused: {q} holds {depth} chunks")

        def on_record(summary: IngestSummary) -> None:
            if summary.read % 1000 == 0:
                progress.update(bar, info=f"{summary.read:,} read, {summary.enqueued:,} enqueued")

        def on_bytes(n: int) -> None:
            progress.advance(bar, n if total else 0)

        with stop_on_sigterm() as stop:
            summary = run_ingest(settings, sources, task=task, queue=queue, on_record=on_record,
                                 on_bytes=on_bytes, on_pause=on_pause, stop=stop)
    _print_summary(summary)
    if json_out:
        print_json_line(summary.to_dict())
    if summary.stopped:
        err_console.print(f"[yellow]stopped by SIGTERM:[/yellow] {summary.left:,} sessions read were left "
                          "unclaimed; run the same command again to enqueue the rest", highlight=False)
        raise typer.Exit(EXIT_STOPPED)


def _print_summary(summary: IngestSummary) -> None:
    data = summary.to_dict()
    table = Table(title="ingest summary", show_header=False)
    names = ["read", "enqueued", "duplicates", "rejected_total", "chunks", "elapsed_s",
             "sessions_per_s", "backpressure_paused_s"]
    for name in names + (["left", "stopped"] if summary.stopped else []):
        table.add_row(name, f"{data[name]}")
    for reason, count in data["rejected"].items():
        table.add_row(f"  rejected: {reason}", str(count))
    err_console.print(table)
