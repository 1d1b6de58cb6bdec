"""``labelq synth``: synthetic web sessions with reference labels."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from labelq.app.cli.common import err_console, friendly_errors, progress_bar


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
