"""Operator commands: config, synth, status, worker, redis."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from labelq.app.cli.common import (
    err_console,
    friendly_errors,
    print_json_line,
    progress_bar,
    settings_of,
)
from labelq.redis_server import EmbeddedRedis, connect
from labelq.settings import QUEUES, masked_dump

if TYPE_CHECKING:
    from labelq.snapshot import StatusSnapshot

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
    watch: Annotated[bool, typer.Option("--watch", help="Keep the view live until Ctrl-C.")] = False,
    interval_s: Annotated[float, typer.Option(help="Refresh period of --watch.")] = 2.0,
) -> None:
    """Queue depths, routing phase, labels, adapters, cost per 1,000 labels, dead letters by reason."""
    from labelq.status import gather

    settings = settings_of(ctx)
    client = connect(settings)
    if json_out:
        print_json_line(gather(settings, client).to_dict())
        return
    if not watch:
        _render_status(gather(settings, client), Console())
        return
    from rich.live import Live

    console = Console(record=False)
    try:
        with Live(console=console, refresh_per_second=4, screen=False) as live:
            while True:
                buffer = Console(width=console.width, record=True, file=io.StringIO())
                _render_status(gather(settings, client), buffer)
                live.update(Text.from_ansi(buffer.export_text(styles=True)))
                time.sleep(interval_s)
    except KeyboardInterrupt:
        pass


def _render_status(snapshot: StatusSnapshot, console: Console) -> None:
    queues = Table(title="queues (chunks waiting)")
    queues.add_column("queue")
    queues.add_column("depth", justify="right")
    for name, depth in snapshot.queues.items():
        queues.add_row(name, str(depth))
    console.print(queues)
    tasks = Table(title="tasks")
    for col in ("task", "ingested", "duplicates", "teacher labels", "student labels", "dead-lettered",
                "teacher $", "cache hits", "budget $"):
        tasks.add_column(col, justify="right" if col != "task" else "left")
    for name, t in snapshot.tasks.items():
        teacher = t.teacher
        budget = "-" if teacher.budget_usd is None else f"{teacher.budget_spent_usd:.2f} / {teacher.budget_usd:.2f}"
        tasks.add_row(name, f"{t.ingested:,}", f"{t.duplicates:,}", f"{t.labelled_teacher:,}",
                      f"{t.labelled_student:,}", f"{t.dead_lettered:,}", f"{teacher.cost_usd:.4f}",
                      f"{teacher.cache_hits:,}", budget)
    console.print(tasks)
    for name, t in snapshot.tasks.items():
        serving = t.adapter.serving
        console.print(f"{name}: adapter " + (f"v{serving}" + (" (pinned)" if t.adapter.pinned else "")
                                              if serving else "none yet (students wait)"), highlight=False)
        routing, cost = t.routing, t.cost
        phase = (f"seed phase {routing.seeded}/{routing.seed_size} to the teacher" if routing.phase == "seed"
                 else f"steady: {routing.sample_rate:.0%} sampled to the teacher, the rest to students")
        console.print(f"  routing: {phase}" + (f", seed stratified by {routing.stratify_by}"
                                                 if routing.stratify_by else "")
                      + f"; {t.escalated_student:,} escalated by students", highlight=False)
        per_1k = [f"teacher ${cost.teacher_per_1k_usd:.4f}" if cost.teacher_per_1k_usd is not None else None,
                  f"student ${cost.student_per_1k_usd:.6f}" if cost.student_per_1k_usd is not None else None]
        if any(per_1k):
            console.print("  cost per 1,000 labels: " + ", ".join(p for p in per_1k if p)
                          + (f"; savings vs teacher-only {cost.savings:.1%}" if cost.savings is not None
                             else ""), highlight=False)
        if t.teacher.paused:
            console.print(f"[yellow]teacher paused for {name}:[/yellow] {t.teacher.paused}")
        for model, m in t.teacher.models.items():
            console.print(f"  {name} / {model}: {m.calls:,} calls, {m.input_tokens:,} tokens in, "
                          f"{m.output_tokens:,} out, ${m.usd:.4f}", highlight=False)
    dlq = Table(title="dead letters by reason")
    dlq.add_column("reason")
    dlq.add_column("count", justify="right")
    for reason, count in snapshot.dead_letter.items():
        dlq.add_row(reason, f"{count:,}")
    console.print(dlq)


@friendly_errors
def worker(
    ctx: typer.Context,
    queue: Annotated[str, typer.Argument(help=f"Which queue to consume: {', '.join(QUEUES)}.")],
    concurrency: Annotated[int | None, typer.Option(help="Worker processes (student: always 1, solo pool).")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery's own log level.")] = "INFO",
) -> None:
    """Start a Celery worker for one queue (same as `celery -A labelq.app.worker_app worker -Q QUEUE`)."""
    if queue not in QUEUES:
        err_console.print(f"[red]unknown queue {queue!r}[/red]: choose one of {', '.join(QUEUES)}")
        raise typer.Exit(2)
    from labelq.app.worker_app import UNAVAILABLE
    from labelq.app.worker_app import app as celery_app

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


@friendly_errors
def flower(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Port (default LABELQ_FLOWER_PORT, 5555).")] = None,
    address: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
) -> None:
    """Start Flower on the labelq queues; basic auth (LABELQ_FLOWER_BASIC_AUTH=user:password) is required."""
    import os

    settings = settings_of(ctx)
    auth = settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else ""
    user, _, password = auth.partition(":")
    if not user or not password:
        err_console.print("[red]Flower needs basic auth:[/red] set LABELQ_FLOWER_BASIC_AUTH=user:password "
                          "(it shows every task's arguments; labelq never starts it open)")
        raise typer.Exit(2)
    from labelq.redis_server import resolve_redis_url

    env = {**os.environ, "FLOWER_BASIC_AUTH": auth,  # by environment, so it never shows in `ps`
           "FLOWER_UNAUTHENTICATED_API": "false", "LABELQ_REDIS_URL": resolve_redis_url(settings)}
    argv = [sys.executable, "-m", "celery", "-A", "labelq.app.flower_app", "flower",
            f"--port={port or settings.flower_port}", f"--address={address}"]
    err_console.print(f"flower on http://{address}:{port or settings.flower_port} (user {user})", highlight=False)
    os.execve(sys.executable, argv, env)


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
    from labelq.app.cli.adapter_cmd import adapter_app, curate, review
    from labelq.app.cli.loop_cmd import audit, demo, export
    from labelq.app.cli.model_cmd import model_app
    from labelq.app.cli.trainer_cmd import trainer_app

    app.add_typer(adapter_app, name="adapter")
    app.add_typer(trainer_app, name="trainer")
    app.command(no_args_is_help=True)(curate)
    app.command(no_args_is_help=True)(review)
    app.add_typer(config_app, name="config")
    app.add_typer(model_app, name="model")
    app.add_typer(redis_app, name="redis")
    app.command()(synth)
    app.command()(status)
    app.command()(demo)
    app.command()(flower)
    app.command()(audit)
    app.command(no_args_is_help=True)(export)
    app.command(no_args_is_help=True)(worker)
