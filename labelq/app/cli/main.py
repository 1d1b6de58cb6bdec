"""Entry point: parse global options, load settings once, configure logging, register the commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from labelq import __version__
from labelq.app.cli import (
    adapter,
    audit,
    config,
    curate,
    deadletter,
    demo,
    export,
    flower,
    ingest,
    model,
    payloads,
    redis,
    report,
    review,
    status,
    synth,
    teach,
    trainer,
    worker,
)
from labelq.app.cli.common import friendly_errors
from labelq.logging import configure
from labelq.settings import load_settings

app = typer.Typer(
    name="labelq",
    help="labelq: label user sessions with a GPT-4-class teacher and a LoRA-tuned student.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"labelq {__version__}")
        raise typer.Exit()


@app.callback()
@friendly_errors
def main_callback(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "--config", envvar="LABELQ_CONFIG_FILE", help="TOML settings file (\\[section] keys flatten to section_key).",
        exists=True, dir_okay=False)] = None,
    log_level: Annotated[str | None, typer.Option(help="Override LABELQ_LOG_LEVEL.")] = None,
    run: Annotated[str | None, typer.Option(
        "--run", help="Look at a demo run: 'latest' or a run id (its Redis keys and store), e.g. "
        "`labelq --run latest status`. Found under the state dir, else .labelq/demo (where `make demo` runs).")]
    = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    overrides = {"log_level": log_level} if log_level else {}
    settings = load_settings(config, **overrides)
    if config is not None:  # workers and other child processes read the same file
        os.environ["LABELQ_CONFIG_FILE"] = str(config.resolve())
    if run is not None:
        from labelq.app.demo import export_run_env, run_settings

        settings = run_settings(settings, run)
        export_run_env(settings)
    configure(settings.log_level, settings.log_format)
    ctx.obj = {"settings": settings, "run": run}


# `labelq --help` lists the commands, then the groups, each in the order added here.
app.command(no_args_is_help=True)(ingest.ingest)
app.command(no_args_is_help=True)(teach.teach)
app.command(no_args_is_help=True)(curate.curate)
app.command(no_args_is_help=True)(review.review)
app.command()(synth.synth)
app.command()(status.status)
app.command()(demo.demo)
app.command()(report.report)
app.command()(flower.flower)
app.command()(audit.audit)
app.command(no_args_is_help=True)(export.export)
app.command(no_args_is_help=True)(worker.worker)
app.add_typer(adapter.app, name="adapter")
app.add_typer(deadletter.app, name="deadletter")
app.add_typer(trainer.app, name="trainer")
app.add_typer(config.app, name="config")
app.add_typer(model.app, name="model")
app.add_typer(payloads.app, name="payloads")
app.add_typer(redis.app, name="redis")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
