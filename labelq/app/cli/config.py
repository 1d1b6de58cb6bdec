"""``labelq config show``: the effective settings, secrets masked."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from labelq.app.cli.common import friendly_errors, print_json_line, settings_of
from labelq.masking import masked_dump
from labelq.settings import Settings

app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)


@app.command("show")
@friendly_errors
def config_show(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print every setting with its effective value; secrets are masked."""
    dumped = masked_dump(settings_of(ctx))
    if json_out:
        print_json_line(dumped)
        return
    table = Table(title="labelq configuration")
    table.add_column("setting (env LABELQ_...)")
    table.add_column("value")
    table.add_column("meaning")
    for name, value in dumped.items():
        table.add_row(name, str(value), Settings.model_fields[name].description or "")
    Console().print(table)
