"""``labelq adapter list|promote|rollback|pin``: adapter versions and which one serves."""

from __future__ import annotations

import textwrap
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from labelq.app.cli.common import err_console, friendly_errors, print_json_line, settings_of
from labelq.redis_server import connect
from labelq.registry import Registry
from labelq.store import open_store
from trainer.gate import GateCheck

WIDTH = 80  # the gate's reasons are wrapped to this many columns

app = typer.Typer(help="List, promote, roll back and pin adapter versions (running students follow).",
                  no_args_is_help=True)


def _registry(ctx: typer.Context) -> Registry:
    settings = settings_of(ctx)
    return Registry(settings, connect(settings), open_store(settings))


@app.command("list")
@friendly_errors
def adapter_list(ctx: typer.Context, task: Annotated[str, typer.Argument(help="Task spec name.")],
                 json_out: Annotated[bool, typer.Option("--json", help="Print JSON (last line).")] = False) -> None:
    """Adapter versions in the store with their metrics, which one serves, and why each was promoted
    or refused (every gate check; FAIL marks the ones that refused it)."""
    reg = _registry(ctx)
    state = reg.state(task)
    rolled_back = reg.rolled_back(task)  # by the agreement monitor (adapters/<task>/v<N>/rolled_back.json)
    rows: list[dict[str, Any]] = [{"version": v, "metrics": reg.metrics(task, v), "rolled_back": v in rolled_back}
                                  for v in reg.versions(task)]
    if json_out:
        print_json_line({"task": task, **state, "serving": reg.serving(task), "versions": rows})
        return
    table = Table(title=f"adapters for {task} (serving: v{reg.serving(task)})")
    for col in ("version", "exact", "cosine", "within", "threshold", "gate", "state"):
        table.add_column(col)
    for row in rows:
        m = row["metrics"].get("adapter", row["metrics"])
        flags = [f for f, on in (("current", row["version"] == state["current"]),
                                 ("pinned", row["version"] == state["pinned"]),
                                 ("rolled back", row["rolled_back"])) if on]
        table.add_row(f"v{row['version']}", str(m.get("exact_match", "-")), str(m.get("cosine", "-")),
                      str(m.get("within_contract", "-")), _threshold(row["metrics"]),
                      _verdict(row["metrics"]), ", ".join(flags))
    Console(width=WIDTH).print(table)
    for row in rows:
        typer.echo(f"\nv{row['version']} {_verdict(row['metrics'])}")
        for line in gate_lines(row["metrics"]):
            typer.echo(line)


def _verdict(metrics: dict[str, Any]) -> str:
    promoted = metrics.get("promoted")
    return "-" if promoted is None else "promoted" if promoted else "refused"


def _threshold(metrics: dict[str, Any]) -> str:
    """The students' confidence threshold: the calibrated one, or ``fixed`` (the setting applies)."""
    calibration = metrics.get("calibration")
    if not isinstance(calibration, dict):
        return "-"
    return f"{calibration.get('threshold')}" if calibration.get("calibrated") else "fixed"


def gate_lines(metrics: dict[str, Any]) -> list[str]:
    """Why a version was promoted or refused, one wrapped line per gate check (FAIL first in its line);
    the ``gate`` sentence for versions written before checks were kept; the calibration's outcome."""
    def wrap(text: str, mark: str) -> list[str]:
        first = f"  {mark:<4} " if mark else "  "
        return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=" " * (len(first) + 2))

    lines: list[str] = []
    checks = metrics.get("checks")
    if isinstance(checks, list) and checks:
        for raw in checks:
            try:
                check = GateCheck(**raw)
            except TypeError:
                lines.extend(wrap(str(raw), "?"))
                continue
            lines.extend(wrap(check.line(), "ok" if check.passed else "FAIL"))
    elif metrics.get("gate"):
        lines.extend(wrap(str(metrics["gate"]), ""))
    calibration = metrics.get("calibration")
    if isinstance(calibration, dict) and calibration.get("why"):
        lines.extend(wrap(f"confidence threshold {calibration.get('threshold')}: {calibration['why']}", ""))
    return lines


@app.command("promote")
@friendly_errors
def adapter_promote(ctx: typer.Context, task: Annotated[str, typer.Argument()],
                    version: Annotated[int, typer.Argument(min=1)]) -> None:
    """Make VERSION the current adapter (students switch before their next chunk)."""
    _registry(ctx).promote(task, version)
    typer.echo(f"{task}: v{version} promoted")


@app.command("rollback")
@friendly_errors
def adapter_rollback(ctx: typer.Context, task: Annotated[str, typer.Argument()]) -> None:
    """Return to the adapter promoted before the current one."""
    typer.echo(f"{task}: rolled back to v{_registry(ctx).rollback(task)}")


@app.command("pin")
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
