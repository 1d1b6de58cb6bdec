"""``labelq deadletter list|show|redrive``: read the dead-letter store and send sessions back."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labelq.app.cli.common import (
    err_console,
    friendly_errors,
    print_json_line,
    progress_bar,
    settings_of,
)
from labelq.deadletter import LetterFilter, StoredLetter, count_letters, find_letters, read_letters
from labelq.errors import ConfigError
from labelq.logging import scrub_text
from labelq.redis_server import connect
from labelq.store import open_store

app = typer.Typer(help="List and show dead letters; send dead-lettered sessions back through the pipeline.",
                  no_args_is_help=True)

Stage = Annotated[str | None, typer.Option(help="Only this stage: ingest, teacher or student.")]
Task = Annotated[str | None, typer.Option(help="Only this task.")]
Reason = Annotated[str | None, typer.Option(help="Only this reason (e.g. contract_violation).")]
Since = Annotated[str | None, typer.Option(help="Letters written at or after this UTC date or ISO time.")]
Until = Annotated[str | None, typer.Option(help="Letters written before this UTC date or ISO time.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]


def _clean(text: object) -> str:
    """For a table cell: secrets masked, rich markup in data shown as text."""
    return escape(scrub_text(str(text)))


def _brief(s: StoredLetter) -> dict[str, Any]:
    d = s.letter
    return {"id": s.id, "created_at": d.created_at, "stage": d.stage, "task": d.task, "reason": d.reason,
            "session_id": d.session_id, "content_hash": d.content_hash, "chunk_id": d.chunk_id,
            "state": s.state, "why_not": s.refused if not s.redriven else None, "detail": d.detail}


def _scrubbed_json(obj: Any) -> str:
    """One JSON line with secrets masked (the masks keep it valid JSON)."""
    return scrub_text(orjson.dumps(obj).decode())


@app.command("list")
@friendly_errors
def list_letters(ctx: typer.Context, stage: Stage = None, task: Task = None, reason: Reason = None,
                 since: Since = None, until: Until = None,
                 limit: Annotated[int, typer.Option(min=0, help="Letters to list, newest first.")] = 20,
                 json_out: JsonOut = False) -> None:
    """Counts by stage, task and reason, then the newest letters with their state."""
    settings = settings_of(ctx)
    where = LetterFilter.parse(stage=stage, task=task, reason=reason, since=since, until=until)
    letters = read_letters(open_store(settings), connect(settings), settings, where)
    counts = count_letters(letters)
    if json_out:
        print(_scrubbed_json({"total": len(letters), "counts": [asdict(c) for c in counts],
                              "letters": [_brief(s) for s in letters[:limit]]}), flush=True)
        return
    console = Console()
    table = Table(title=f"dead letters: {len(letters):,}")
    for col in ("stage", "task", "reason", "letters", "redriven", "redrivable"):
        table.add_column(col, justify="right" if col in ("letters", "redriven", "redrivable") else "left")
    for c in counts:
        table.add_row(c.stage, _clean(c.task or "-"), _clean(c.reason), f"{c.letters:,}", f"{c.redriven:,}",
                      f"{c.redrivable:,}")
    console.print(table)
    if not letters or not limit:
        return
    newest = Table(title=f"newest {min(limit, len(letters))} of {len(letters):,}")
    for col in ("id", "created (UTC)", "stage", "task", "reason", "session", "state"):
        newest.add_column(col)
    for s in letters[:limit]:
        newest.add_row(s.id, s.letter.created_at[:19].replace("T", " "), s.letter.stage,
                       _clean(s.letter.task or "-"), _clean(s.letter.reason), _clean(s.letter.session_id or "-"),
                       s.state.replace("_", " "))
    console.print(newest)
    for why in sorted({s.refused for s in letters if s.refused and not s.redriven}):
        err_console.print(f"not redrivable: {why}", highlight=False)


@app.command("show")
@friendly_errors
def show(ctx: typer.Context,
         which: Annotated[str, typer.Argument(help="A letter id (from list), a session id or a content hash.")],
         json_out: JsonOut = False) -> None:
    """Every letter of one id, session or content hash, in full (secrets masked); exit 1 if none."""
    settings = settings_of(ctx)
    found = find_letters(read_letters(open_store(settings), connect(settings), settings), which)
    if not found:
        err_console.print(f"no dead letter with id, session id or content hash {_clean(which)}", highlight=False)
        raise typer.Exit(1)
    full = [{"id": s.id, "object": s.key, "state": s.state, "why_not": s.refused if not s.redriven else None,
             **s.letter.model_dump(mode="json")} for s in found]
    if json_out:
        print(_scrubbed_json({"letters": full}), flush=True)
        return
    for letter in full:
        print(scrub_text(orjson.dumps(letter, option=orjson.OPT_INDENT_2).decode()), flush=True)


@app.command("redrive")
@friendly_errors
def redrive(ctx: typer.Context, stage: Stage = None, task: Task = None, reason: Reason = None,
            since: Since = None, until: Until = None,
            limit: Annotated[int | None, typer.Option(min=1, help="At most this many letters, newest first.")]
            = None,
            dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be sent; send nothing.")]
            = False,
            json_out: JsonOut = False) -> None:
    """Send the matching teacher and student letters' sessions back to their stage's queue, once each.

    Each letter leaves the dead-letter counts as its session goes back, so `labelq audit` stays balanced;
    letters redriven before are skipped. Ingest rejects are bad input: fix the source and ingest it again.
    """
    from labelq.redrive import redrive as run_redrive

    settings = settings_of(ctx)
    if stage == "ingest":
        raise ConfigError("--stage ingest: ingest rejects are bad input and cannot be redriven; "
                          "fix the source and ingest it again")
    where = LetterFilter.parse(stage=stage, task=task, reason=reason, since=since, until=until)
    with progress_bar(transient=True) as progress:
        bar = progress.add_task("redrive", total=None, info="")

        def on_progress(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total, info=f"of {total:,} letters")

        summary = run_redrive(settings, open_store(settings), connect(settings), where, dry_run=dry_run,
                              limit=limit, on_progress=on_progress)
    verb = "would send" if dry_run else "sent"
    chunks = ", ".join(f"{n:,} chunks to {q}" for q, n in sorted(summary.chunks.items())) or "no chunks"
    err_console.print(f"{summary.matched:,} letters matched; {verb} {summary.redriven:,} sessions back "
                      f"({chunks}); {summary.already_redriven:,} redriven before", highlight=False)
    if summary.resumed_chunks:
        err_console.print(f"published {summary.resumed_chunks:,} chunks an interrupted redrive had left",
                          highlight=False)
    for why, n in summary.refused.items():
        err_console.print(f"{n:,} not redrivable: {why}", highlight=False)
    if json_out:
        print_json_line(summary.to_dict())
