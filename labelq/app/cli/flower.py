"""``labelq flower``: Flower on the labelq queues, never without basic auth."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from labelq.app.cli.common import err_console, friendly_errors, settings_of
from labelq.redis_server import resolve_redis_url


@friendly_errors
def flower(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Port (default LABELQ_FLOWER_PORT, 5555).")] = None,
    address: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
) -> None:
    """Start Flower on the labelq queues; basic auth (LABELQ_FLOWER_BASIC_AUTH=user:password) is required."""
    settings = settings_of(ctx)
    auth = settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else ""
    user, _, password = auth.partition(":")
    if not user or not password:
        err_console.print("[red]Flower needs basic auth:[/red] set LABELQ_FLOWER_BASIC_AUTH=user:password "
                          "(it shows every task's arguments; labelq never starts it open)")
        raise typer.Exit(2)
    env = {**os.environ, "FLOWER_BASIC_AUTH": auth,  # by environment, so it never shows in `ps`
           "FLOWER_UNAUTHENTICATED_API": "false", "LABELQ_REDIS_URL": resolve_redis_url(settings)}
    argv = [sys.executable, "-m", "celery", "-A", "labelq.app.flower_app", "flower",
            f"--port={port or settings.flower_port}", f"--address={address}"]
    err_console.print(f"flower on http://{address}:{port or settings.flower_port} (user {user})", highlight=False)
    os.execve(sys.executable, argv, env)
