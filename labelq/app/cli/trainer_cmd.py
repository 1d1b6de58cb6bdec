"""``labelq trainer run``: train every curated bucket that is ready, now or as it appears."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from labelq.app.cli.common import err_console, friendly_errors, print_json_line, settings_of

trainer_app = typer.Typer(help="The trainer service: curated buckets -> LoRA adapters -> promotion gate.",
                          no_args_is_help=True)


def _report(metrics: dict[str, Any]) -> None:
    adapter = metrics["adapter"]
    err_console.print(
        f"{metrics['task']} {metrics['dataset_version']} -> adapter v{metrics['version']}: "
        f"exact {adapter['exact_match']:.3f}, cosine {adapter['cosine']:.3f}, "
        f"within contract {adapter['within_contract']:.3f}; "
        f"{'promoted' if metrics['promoted'] else 'not promoted'} ({metrics['gate']})", highlight=False)


@trainer_app.command("run")
@friendly_errors
def trainer_run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Train what is ready now, then exit.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="With --once: print the results as JSON.")] = False,
) -> None:
    """Poll the store (local or s3://) for _READY buckets without an adapter and train them."""
    try:
        from trainer.tasks import run_forever, run_once
    except ImportError as exc:
        err_console.print(f"[red]needs the trainer extra:[/red] pip install 'labelq[trainer]' ({exc})")
        raise typer.Exit(2) from None
    settings = settings_of(ctx)
    if not once:
        from labelq.metrics import serve

        serve(settings)  # LABELQ_METRICS_PORT: queue depths and the like for Prometheus
        run_forever(settings, _report)
        return
    results = run_once(settings)
    for metrics in results:
        _report(metrics)
    if not results:
        err_console.print("no curated bucket is waiting for training")
    if json_out:
        print_json_line([{k: m[k] for k in ("task", "version", "dataset_version", "promoted", "gate",
                                            "base", "adapter", "serving")} for m in results])
