"""``labelq status``: queue depths, Redis memory, routing, labels, adapters, cost and dead letters, as tables."""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from labelq.app.cli.common import friendly_errors, print_json_line, settings_of
from labelq.redis_server import connect

if TYPE_CHECKING:
    from labelq.snapshot import QualityStatus, RedisMemoryStatus, StatusSnapshot, TeacherStatus


@friendly_errors
def status(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep the view live until Ctrl-C.")] = False,
    interval_s: Annotated[float, typer.Option(help="Refresh period of --watch.")] = 2.0,
) -> None:
    """Queue depths, routing phase, labels, adapters, cost per 1,000 labels, dead letters by reason."""
    from labelq.status import gather
    from labelq.store import open_store

    settings = settings_of(ctx)
    client = connect(settings)
    store = open_store(settings)  # a budget that Redis lost shows the durable spend
    if json_out:
        print_json_line(gather(settings, client, store).to_dict())
        return
    if not watch:
        _render_status(gather(settings, client, store), Console())
        return
    from rich.live import Live

    console = Console(record=False)
    try:
        with Live(console=console, refresh_per_second=4, screen=False) as live:
            while True:
                buffer = Console(width=console.width, record=True, file=io.StringIO())
                _render_status(gather(settings, client, store), buffer)
                live.update(Text.from_ansi(buffer.export_text(styles=True)))
                time.sleep(interval_s)
    except KeyboardInterrupt:
        pass


def _render_status(snapshot: StatusSnapshot, console: Console) -> None:
    queues = Table(title="queues (chunks waiting)")
    queues.add_column("queue")
    queues.add_column("depth", justify="right")
    for name, depth in snapshot.queues.items():
        queues.add_row(name, str(depth))
    console.print(queues)
    if snapshot.redis_memory is not None:
        console.print(_memory_line(snapshot.redis_memory), highlight=False)
    # Two tables, not one of nine columns, and headers that wrap at a space ("dead letters"),
    # so that neither table cuts a header or a count at 80 columns.
    tasks = Table(title="tasks")
    tasks.add_column("task", no_wrap=True)  # narrowing goes to the headers that wrap, not the name
    for col in ("ingested", "duplicates", "teacher labels", "student labels", "dead letters"):
        tasks.add_column(col, justify="right")
    spend = Table(title="teacher spend")
    for col in ("task", "teacher $", "cache hits", "budget $"):
        spend.add_column(col, justify="right" if col != "task" else "left")
    for name, t in snapshot.tasks.items():
        teacher = t.teacher
        budget = "-" if teacher.budget_usd is None else f"{teacher.budget_spent_usd:.2f} / {teacher.budget_usd:.2f}"
        tasks.add_row(name, f"{t.ingested:,}", f"{t.duplicates:,}", f"{t.labelled_teacher:,}",
                      f"{t.labelled_student:,}", f"{t.dead_lettered:,}")
        spend.add_row(name, f"{teacher.cost_usd:.4f}", f"{teacher.cache_hits:,}", budget)
    console.print(tasks)
    console.print(spend)
    for stage, w in snapshot.waiting.items():
        since = time.strftime("%H:%M:%S UTC", time.gmtime(w.since))
        console.print(f"[yellow]{stage} workers wait on {w.on}[/yellow] since {since} "
                      f"({time.time() - w.since:.0f} s): " + escape(w.detail), highlight=False)
    for name, t in snapshot.tasks.items():
        serving = t.adapter.serving
        console.print(f"{name}: adapter " + (f"v{serving}" + (" (pinned)" if t.adapter.pinned else "")
                                              if serving else "none yet (students wait)"), highlight=False)
        if t.quality is not None:
            for line in _quality_lines(t.quality):
                console.print(line, highlight=False)
        if t.parked_chunks:
            console.print(f"  parked off the student queue until an adapter is promoted: {t.parked_chunks:,} chunks",
                          highlight=False)
        routing, cost = t.routing, t.cost
        phase = (f"seed phase {routing.seeded}/{routing.seed_size} to the teacher" if routing.phase == "seed"
                 else f"steady: {routing.sample_rate:.0%} sampled to the teacher, the rest to students")
        console.print(f"  routing: {phase}" + (f", seed stratified by {routing.stratify_by}"
                                                 if routing.stratify_by else "")
                      + f"; {t.escalated_student:,} escalated by students", highlight=False)
        per_1k = [f"teacher ${cost.teacher_per_1k_usd:.4f}" if cost.teacher_per_1k_usd is not None else None,
                  f"student ${cost.student_per_1k_usd:.6f}" if cost.student_per_1k_usd is not None else None]
        if any(per_1k):
            console.print("  cost per 1,000 labels: " + ", ".join(p for p in per_1k if p)
                          + (f"; savings vs teacher-only {cost.savings:.1%}" if cost.savings is not None
                             else ""), highlight=False)
        if t.teacher.budget_remaining_usd is not None:
            console.print(f"  {_budget_line(t.teacher)}", highlight=False)
        if t.teacher.paused:
            console.print(f"[yellow]teacher paused for {name}:[/yellow] {t.teacher.paused}")
        for model, m in t.teacher.models.items():
            console.print(f"  {name} / {model}: {m.calls:,} calls, {m.input_tokens:,} tokens in, "
                          f"{m.output_tokens:,} out, ${m.usd:.4f}", highlight=False)
    dlq = Table(title="dead letters by reason")
    dlq.add_column("reason")
    dlq.add_column("count", justify="right")
    for reason, count in snapshot.dead_letter.items():
        dlq.add_row(reason, f"{count:,}")
    console.print(dlq)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _quality_lines(q: QualityStatus) -> list[str]:
    """``  agreement v3 (14:00 UTC): n=412 exact 41% cosine 0.83 within 99%``, the drift mark, the last
    rollback; each under 80 columns."""
    lines = []
    if q.window_start is not None:
        window = time.strftime("%H:%M UTC", time.gmtime(q.window_start))
        cosine = "-" if q.cosine is None else f"{q.cosine:.2f}"
        lines.append(f"  agreement v{q.version} ({window}): n={q.n:,} exact {_percent(q.exact)} "
                     f"cosine {cosine} within {_percent(q.within)}")
    else:
        lines.append(f"  agreement v{q.version}: no shadow pairs yet")
    if q.degraded:
        lines.append("  [red]quality degraded:[/red] " + escape("; ".join(q.reasons)))
    rb = q.rolled_back
    if rb:
        lines.append(f"  [yellow]rolled back[/yellow] v{rb.get('from')} -> v{rb.get('to')} at "
                     f"{str(rb.get('at', ''))[:16].replace('T', ' ')} UTC (p={rb.get('p')})")
    return lines


def _budget_line(teacher: TeacherStatus) -> str:
    """``budget: $0.62 of $1.00 left this day (2026-11-21), resets 2026-11-22 00:00 UTC``."""
    period = "in total" if teacher.budget_period == "total" else (
        f"this {teacher.budget_period} ({teacher.budget_period_id})")
    text = f"budget: ${teacher.budget_remaining_usd:.2f} of ${teacher.budget_usd:.2f} left {period}"
    if teacher.budget_reserved_usd:
        text += f", ${teacher.budget_reserved_usd:.2f} reserved by calls in flight"
    if teacher.budget_resets_at:
        text += f", resets {teacher.budget_resets_at[:16].replace('T', ' ')} UTC"
    return text


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def _memory_line(memory: RedisMemoryStatus) -> str:
    """``redis memory: 1,234 MiB of 3,072 MiB (40%); producers pause above 80%; reserve 61 MiB held``."""
    if memory.share is None:
        return (f"redis memory: {_mib(memory.used_bytes)} [yellow]with no maxmemory[/yellow]: Redis grows until "
                "the host runs out (set maxmemory with noeviction: infra/redis.conf)")
    share = f"{memory.share:.0%}"
    if memory.share >= 1:
        share = f"[red]{share}: full, writes refused[/red]"
    elif memory.share > memory.high_water:
        share = f"[yellow]{share}: producers paused[/yellow]"
    reserve = f"reserve {_mib(memory.reserve_bytes)} held" if memory.reserve_bytes else "no reserve held"
    return (f"redis memory: {_mib(memory.used_bytes)} of {_mib(memory.max_bytes)} ({share}); "
            f"producers pause above {memory.high_water:.0%}; {reserve}")
