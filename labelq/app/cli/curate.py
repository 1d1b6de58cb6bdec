"""``labelq curate``: the next curated bucket from teacher and human labels."""

from __future__ import annotations

from typing import Annotated

import typer

from labelq.app.cli.common import err_console, friendly_errors, print_json_line, settings_of
from labelq.store import open_store


@friendly_errors
def curate(ctx: typer.Context, task: Annotated[str, typer.Argument(help="Task spec name.")],
           json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON (last line).")] = False
           ) -> None:
    """Build the next curated bucket (train/val split, manifest, _READY) from teacher and human labels."""
    from labelq.spec import load_spec
    from trainer.curation import curate as build

    settings = settings_of(ctx)
    manifest = build(open_store(settings), load_spec(task, settings.specs_dir),
                     require_review=settings.curation_require_review)
    if manifest is None:
        err_console.print(f"nothing to curate for {task}: no usable teacher or human labels yet")
        raise typer.Exit(1)
    err_console.print(f"curated {task} {manifest.version}: {manifest.counts.to_dict()}, dropped {manifest.dropped}"
                      + (" (waits for `labelq review`)" if settings.curation_require_review else ""))
    if json_out:
        print_json_line(manifest.summary())
