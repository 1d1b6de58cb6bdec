"""What every command shares: settings from the context, errors, progress bars."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from labelq.errors import ConfigError, LabelqError
from labelq.logging import scrub_text
from labelq.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
err_console = Console(stderr=True)

EXIT_OPERATIONAL = 1
EXIT_CONFIG = 2
EXIT_STOPPED = 3  # SIGTERM ended the command early and cleanly; running it again finishes the work


@contextmanager
def extra_required(extras: str) -> Iterator[None]:
    """Imports inside need ``labelq[<extras>]``: without it, one line that says what to install, exit 2."""
    try:
        yield
    except ImportError as exc:
        err_console.print(f"[red]needs the {extras} extra:[/red] pip install 'labelq[{extras}]' ({exc})")
        raise typer.Exit(EXIT_CONFIG) from None


def settings_of(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


def friendly_errors(fn: F) -> F:
    """Turn labelq errors into one readable line and an exit status, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        # The message is text, not markup ("[teacher.prices]" must show), and is not wrapped: it may
        # hold a setting to copy.
        except ConfigError as exc:
            err_console.print(f"[red]configuration error:[/red] {escape(scrub_text(str(exc)))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(EXIT_CONFIG) from None
        except LabelqError as exc:
            err_console.print(f"[red]error:[/red] {escape(scrub_text(str(exc)))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_OPERATIONAL) from None

    return wrapper  # type: ignore[return-value]


def print_json_line(obj: Any) -> None:
    """One JSON object on one line, last on stdout (scripts read the last line)."""
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def progress_bar(
    *, bytes_total: int | None = None, total_items: int | None = None, transient: bool = False
) -> Progress:
    """A rich progress bar on stderr: bytes with speed when the size is known, else a count.

    Disabled when stderr is not a terminal, so CI logs and pipes stay clean.
    """
    columns: list[Any] = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
    if bytes_total:
        columns += [BarColumn(), TextColumn("{task.percentage:>5.1f}%"), TransferSpeedColumn(),
                    TimeRemainingColumn()]
    else:
        columns += [MofNCompleteColumn() if total_items else TextColumn("{task.completed:,.0f}")]
    columns += [TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
    return Progress(*columns, console=err_console, transient=transient,
                    disable=not err_console.is_terminal)
