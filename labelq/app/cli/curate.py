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
    """Build the next curated bucket (train/val split, manifest, _READY) from the teacher and human labels
    written since the last one."""
    from labelq.spec import load_spec
    from trainer.curation import curate as build

    settings = settings_of(ctx)
    manifest = build(open_store(settings), load_spec(task, settings.specs_dir),
                     require_review=settings.curation_require_review, max_rows=settings.curation_max_rows,
                     lag_s=settings.curation_watermark_lag_s)
    if manifest is None:
        err_console.print(f"nothing to curate for {task}: no usable teacher or human labels since the last bucket")
        raise typer.Exit(1)
    new = manifest.new.to_dict() if manifest.new else manifest.counts.to_dict()
    err_console.print(f"curated {task} {manifest.version}: {new} new rows from {manifest.labels_seen} labels read, "
                      f"training set {manifest.counts.to_dict()} from {len(manifest.selection)} buckets, "
                      f"dropped {manifest.dropped}"
                      + (" (waits for `labelq review`)" if settings.curation_require_review else ""))
    if json_out:
        print_json_line(manifest.summary())
