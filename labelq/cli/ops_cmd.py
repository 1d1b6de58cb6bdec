"""Operator commands: config, synth, status, worker, redis."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from labelq.cli.common import (
    err_console,
    friendly_errors,
    print_json_line,
    progress_bar,
    settings_of,
)
from labelq.redis_server import EmbeddedRedis, connect
from labelq.settings import QUEUES, masked_dump

config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
redis_app = typer.Typer(help="Manage the embedded Redis server (when LABELQ_REDIS_URL is unset).",
                        no_args_is_help=True)


@config_app.command("show")
@friendly_errors
def config_show(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print every setting with its effective value; secrets are masked."""
    from labelq.settings import Settings

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


@friendly_errors
def synth(
    n: Annotated[int, typer.Option("-n", "--count", min=1, help="Number of sessions.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same sessions.")] = 0,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output JSONL file ('-' for stdout).")] = Path("sessions.jsonl"),
    noise: Annotated[float, typer.Option(min=0.0, max=1.0, help="Chance of a noise event between steps.")] = 0.35,
) -> None:
    """Write realistic synthetic web sessions (JSONL), each with a reference label under `_reference`."""
    from labelq.synth import generate

    to_stdout = str(out) == "-"
    if not to_stdout:
        out.parent.mkdir(parents=True, exist_ok=True)
    fh = sys.stdout.buffer if to_stdout else out.open("wb")
    try:
        with progress_bar(total_items=n) as progress:
            bar = progress.add_task("synth", total=n, info="")
            for i, session in enumerate(generate(n, seed, noise), 1):
                fh.write(orjson.dumps(session) + b"\n")
                if i % 500 == 0:
                    progress.update(bar, completed=i)
            progress.update(bar, completed=n)
    finally:
        if not to_stdout:
            fh.close()
    if not to_stdout:
        err_console.print(f"wrote {n:,} sessions to {out}")


@friendly_errors
def status(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
) -> None:
    """Queue depths, dead-letter counts by reason, and per-task totals."""
    from labelq.status import gather

    settings = settings_of(ctx)
    snapshot = gather(settings, connect(settings))
    if json_out:
        print_json_line(snapshot)
        return
    console = Console()
    queues = Table(title="queues (chunks waiting)")
    queues.add_column("queue")
    queues.add_column("depth", justify="right")
    for name, depth in snapshot["queues"].items():
        queues.add_row(name, str(depth))
    console.print(queues)
    tasks = Table(title="tasks")
    for col in ("task", "ingested", "duplicates", "teacher labels", "student labels", "dead-lettered",
                "teacher $", "cache hits", "budget $"):
        tasks.add_column(col, justify="right" if col != "task" else "left")
    for name, t in snapshot["tasks"].items():
        teacher = t["teacher"]
        budget = "-" if teacher["budget_usd"] is None else (
            f"{teacher['budget_spent_usd']:.2f} / {teacher['budget_usd']:.2f}")
        tasks.add_row(name, f"{t['ingested']:,}", f"{t['duplicates']:,}", f"{t['labelled_teacher']:,}",
                      f"{t['labelled_student']:,}", f"{t['dead_lettered']:,}", f"{teacher['cost_usd']:.4f}",
                      f"{teacher['cache_hits']:,}", budget)
    console.print(tasks)
    for name, t in snapshot["tasks"].items():
        adapter = t["adapter"]
        serving = adapter["pinned"] or adapter["current"]
        console.print(f"{name}: adapter " + (f"v{serving}" + (" (pinned)" if adapter["pinned"] else "")
                                              if serving else "none yet (students wait)"), highlight=False)
        if t["teacher"]["paused"]:
            console.print(f"[yellow]teacher paused for {name}:[/yellow] {t['teacher']['paused']}")
        for model, m in t["teacher"]["models"].items():
            console.print(f"  {name} / {model}: {m['calls']:,} calls, {m['input_tokens']:,} tokens in, "
                          f"{m['output_tokens']:,} out, ${m['usd']:.4f}", highlight=False)
    dlq = Table(title="dead letters by reason")
    dlq.add_column("reason")
    dlq.add_column("count", justify="right")
    for reason, count in snapshot["dead_letter"].items():
        dlq.add_row(reason, f"{count:,}")
    console.print(dlq)


@friendly_errors
def worker(
    ctx: typer.Context,
    queue: Annotated[str, typer.Argument(help=f"Which queue to consume: {', '.join(QUEUES)}.")],
    concurrency: Annotated[int | None, typer.Option(help="Worker processes (student: always 1, solo pool).")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery's own log level.")] = "INFO",
) -> None:
    """Start a Celery worker for one queue (same as `celery -A labelq.worker_app worker -Q QUEUE`)."""
    if queue not in QUEUES:
        err_console.print(f"[red]unknown queue {queue!r}[/red]: choose one of {', '.join(QUEUES)}")
        raise typer.Exit(2)
    from labelq.worker_app import UNAVAILABLE
    from labelq.worker_app import app as celery_app

    if queue in UNAVAILABLE:
        err_console.print(f"[red]the {queue} worker cannot start:[/red] {UNAVAILABLE[queue]}\n"
                          f"install it with: pip install 'labelq[{queue}]'")
        raise typer.Exit(2)

    argv = ["worker", "-Q", queue, f"--loglevel={loglevel}", "-n", f"{queue}@%h"]
    if queue in ("student", "trainer"):
        argv.append("--pool=solo")  # vLLM and training start their own processes
    elif concurrency:
        argv.append(f"--concurrency={concurrency}")
    celery_app.worker_main(argv=argv)


@redis_app.command("start")
@friendly_errors
def redis_start(ctx: typer.Context) -> None:
    """Start the embedded Redis for this state dir (no-op when running) and print where it listens."""
    url = EmbeddedRedis(settings_of(ctx).state_dir).ensure_running()
    typer.echo(f"embedded redis running at {url.split('@', 1)[1]} (password in state dir)")


@redis_app.command("stop")
@friendly_errors
def redis_stop(ctx: typer.Context) -> None:
    """Shut the embedded Redis down cleanly (AOF is fsynced; data stays in the state dir)."""
    stopped = EmbeddedRedis(settings_of(ctx).state_dir).stop()
    typer.echo("embedded redis stopped" if stopped else "embedded redis was not running")


@redis_app.command("ping")
@friendly_errors
def redis_ping(ctx: typer.Context) -> None:
    """Check that labelq's Redis answers (starts the embedded one if needed)."""
    connect(settings_of(ctx))
    typer.echo("PONG")


def register(app: typer.Typer) -> None:
    from labelq.cli.adapter_cmd import adapter_app, curate, review
    from labelq.cli.model_cmd import model_app
    from labelq.cli.trainer_cmd import trainer_app

    app.add_typer(adapter_app, name="adapter")
    app.add_typer(trainer_app, name="trainer")
    app.command(no_args_is_help=True)(curate)
    app.command(no_args_is_help=True)(review)
    app.add_typer(config_app, name="config")
    app.add_typer(model_app, name="model")
    app.add_typer(redis_app, name="redis")
    app.command()(synth)
    app.command()(status)
    app.command(no_args_is_help=True)(worker)
