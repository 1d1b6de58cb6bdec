"""``labelq report``: render a finished demo run's report again, from its store and its report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelq.app.cli.common import err_console, friendly_errors, print_json_line, settings_of


@friendly_errors
def report(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(help="The report folder of the run (default: "
                                             "<state_dir>/runs/<id>/report); its report.json must exist.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as one JSON line (last line).")]
    = False,
) -> None:
    """Render the demo report of the latest run (or `labelq --run <id> report`) again: sample sessions, label
    lengths, agreement and throughput over time, cost and quality come from the run's store; the counts the
    run saw (ingest, audit, stage times) from its report.json. Needs no Redis."""
    from labelq.app.demo import run_id_of, run_settings
    from labelq.app.report import rerender
    from labelq.errors import ConfigError

    run = ctx.obj.get("run")
    settings = settings_of(ctx) if run else run_settings(settings_of(ctx), "latest")
    run_id = run_id_of(settings.state_dir, run or "latest")
    if run_id is None:  # run_settings found it a moment ago
        raise ConfigError(f"no demo run {run or 'latest'!r} under {settings.state_dir / 'runs'}")
    run_dir = settings.state_dir / "runs" / run_id
    out = out or run_dir / "report"
    if not (out / "report.json").exists():
        raise ConfigError(f"no report.json in {out}: the run did not finish its report (run the demo again)")
    summary, paths = rerender(settings, run_dir, out)
    err_console.print(f"report: {paths['html']}", highlight=False)
    if json_out:
        print_json_line({k: v for k, v in summary.items() if k != "stages"})
