"""``labelq worker``: a Celery worker for one queue."""

from __future__ import annotations

from typing import Annotated

import typer

from labelq.app.cli.common import err_console, friendly_errors
from labelq.settings import QUEUES


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
