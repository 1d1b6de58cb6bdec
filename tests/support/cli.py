"""The `labelq` CLI run as a user runs it: a subprocess with the test's settings in its environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from labelq.settings import Settings

COMMAND = [sys.executable, "-m", "labelq.app.cli.main"]


def cli_env(settings: Settings | None = None, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `labelq` run with the test's settings (and ``env`` on top)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LABELQ_")}
    if settings is not None:
        full_env.update({
            "LABELQ_STATE_DIR": str(settings.state_dir),
            "LABELQ_REDIS_URL": settings.redis_url.get_secret_value() if settings.redis_url else "",
            "LABELQ_REDIS_KEY_PREFIX": settings.redis_key_prefix,
            "LABELQ_STORE_URL": settings.effective_store_url,
            "LABELQ_TEACHER_BACKEND": settings.teacher_backend,  # replay runs only when chosen
        })
    full_env.update(env or {})
    return full_env


def labelq(args: list[str], settings: Settings | None = None, stdin: bytes | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*COMMAND, *args], input=stdin, capture_output=True, env=cli_env(settings, env),
                          timeout=120)


def labelq_started(args: list[str], settings: Settings, *, stdout: IO[bytes], stderr: IO[bytes],
                   env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """The CLI started and left running (to be signalled by the test)."""
    return subprocess.Popen([*COMMAND, *args], env=cli_env(settings, env), stdout=stdout, stderr=stderr,
                            cwd=cwd)
