"""``labelq redis start|stop|ping``: the embedded Redis server."""

from __future__ import annotations

import typer

from labelq.app.cli.common import friendly_errors, settings_of
from labelq.redis_server import EmbeddedRedis, connect

app = typer.Typer(help="Manage the embedded Redis server (when LABELQ_REDIS_URL is unset).",
                  no_args_is_help=True)


@app.command("start")
@friendly_errors
def redis_start(ctx: typer.Context) -> None:
    """Start the embedded Redis for this state dir (no-op when running) and print where it listens."""
    settings = settings_of(ctx)
    url = EmbeddedRedis(settings.state_dir, settings.redis_maxmemory_mb).ensure_running()
    typer.echo(f"embedded redis running at {url.split('@', 1)[1]} (password in state dir)")


@app.command("stop")
@friendly_errors
def redis_stop(ctx: typer.Context) -> None:
    """Shut the embedded Redis down cleanly (AOF is fsynced; data stays in the state dir)."""
    stopped = EmbeddedRedis(settings_of(ctx).state_dir).stop()
    typer.echo("embedded redis stopped" if stopped else "embedded redis was not running")


@app.command("ping")
@friendly_errors
def redis_ping(ctx: typer.Context) -> None:
    """Check that labelq's Redis answers (starts the embedded one if needed)."""
    connect(settings_of(ctx))
    typer.echo("PONG")
