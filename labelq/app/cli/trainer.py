"""``labelq trainer run``: train every curated bucket that is ready, now or as it appears."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from labelq.app.cli.common import (
    err_console,
    extra_required,
    friendly_errors,
    print_json_line,
    settings_of,
)

if TYPE_CHECKING:
    from trainer.reports import TrainingReport

app = typer.Typer(help="The trainer service: curated buckets -> LoRA adapters -> promotion gate.",
                  no_args_is_help=True)


def _report(report: TrainingReport) -> None:
    adapter = report.adapter
    err_console.print(
        f"{report.task} {report.dataset_version} -> adapter v{report.version}: "
        f"exact {adapter.exact_match:.3f}, cosine {adapter.cosine:.3f}, "
        f"within contract {adapter.within_contract:.3f}; "
        f"{'promoted' if report.promoted else 'not promoted'} ({report.gate})", highlight=False)


@app.command("run")
@friendly_errors
def trainer_run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Train what is ready now, then exit.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="With --once: print the results as JSON.")] = False,
) -> None:
    """Poll the store (local or s3://) for _READY buckets without an adapter and train them."""
    with extra_required("trainer"):
        from trainer.tasks import run_forever, run_once
    settings = settings_of(ctx)
    if not once:
        from labelq.metrics import serve

        serve(settings)  # LABELQ_METRICS_PORT: queue depths and the like for Prometheus
        run_forever(settings, _report)
        return
    results = run_once(settings)
    for report in results:
        _report(report)
    if not results:
        err_console.print("no curated bucket is waiting for training")
    if json_out:
        print_json_line([{k: r.to_dict()[k] for k in ("task", "version", "dataset_version", "promoted", "gate",
                                                      "base", "adapter", "serving")} for r in results])
