"""The demo's report: counts, quality against reference labels, throughput, cost; PNG, HTML and JSON.

``summarise`` turns a finished run into plain data (the ``--json`` line);
``write_report`` renders it as ``report.json``, ``report.png`` (four plots)
and ``report.html`` (self-contained: the PNG is embedded).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import redis

from labelq.errors import DecodeError, ObjectNotFound
from labelq.export import latest_labels
from labelq.registry import Registry
from labelq.schemas import LabelRecord
from labelq.settings import Settings
from labelq.snapshot import AuditReport, StatusSnapshot
from labelq.store import ObjectStore, open_store

if TYPE_CHECKING:
    from producer.ingest import IngestSummary
    from trainer.reports import TrainingReport

TASK = "session-label"


@dataclass(frozen=True, slots=True)
class DemoRun:
    """A finished demo run: what ``summarise`` needs to write the report."""

    run_id: str
    run_dir: str
    settings: Settings  # the run's own settings (key prefix, store)
    model_path: str  # the base model the students served
    references: dict[str, str]  # session id -> reference label, for scoring
    ingest: IngestSummary
    status: StatusSnapshot  # at the end of the run
    audit: AuditReport  # at the end of the run
    stages: dict[str, dict[str, float]]  # stage -> {"start", "end"}, seconds from the run's start
    finished: bool  # False: the run timed out
    elapsed_s: float


def _quality(records: list[LabelRecord], references: dict[str, str]) -> dict[str, float]:
    from labelq.spec import load_spec
    from trainer.evaluate import EvalScores, score

    pairs = [(r.label, references[r.session_id]) for r in records if r.session_id in references]
    if not pairs:
        return EvalScores.empty().to_dict()
    return score([p for p, _ in pairs], [r for _, r in pairs], load_spec(TASK).contract).to_dict()


def _span_s(records: list[LabelRecord]) -> float:
    times = [datetime.fromisoformat(r.created_at) for r in records]
    return (max(times) - min(times)).total_seconds() if len(times) > 1 else 0.0


def _serving_report(settings: Settings, store: ObjectStore) -> TrainingReport | None:
    """The serving adapter's training report; None when there is none (the report is still useful)."""
    from trainer.reports import TrainingReport

    try:
        from labelq.redis_server import connect

        registry = Registry(settings, connect(settings), store)
        serving = registry.serving(TASK)
        return None if serving is None else TrainingReport.from_dict(registry.metrics(TASK, serving))
    except (ObjectNotFound, DecodeError, OSError, redis.RedisError):
        return None


def summarise(run: DemoRun) -> dict[str, Any]:
    settings = run.settings
    store = open_store(settings)
    labels = latest_labels(store, tasks=[TASK])
    by_source: dict[str, list[LabelRecord]] = {}
    for record in labels:
        by_source.setdefault(record.source, []).append(record)
    student, teacher = by_source.get("student", []), by_source.get("teacher", [])
    balance = run.audit.tasks.get(TASK)
    in_flight = balance.in_flight if balance else 0
    task_status = run.status.tasks.get(TASK)
    ingest = run.ingest
    sessions = len(run.references)
    labelled = len(labels)
    dead = (balance.dead_lettered if balance else 0) + ingest.rejected_total
    trained = _serving_report(settings, store)
    stages = run.stages
    student_wall = stages.get("student", {}).get("end", 0) - stages.get("student", {}).get("start", 0)
    stats_engine_s = task_status.student_engine_s if task_status else 0.0
    teacher_span = _span_s(teacher)
    escalated = task_status.escalated_student if task_status else 0
    cost = task_status.cost if task_status else None
    throughput = {
        "ingest_sessions_per_s": ingest.sessions_per_s,
        "teacher_labels_per_s": round(len(teacher) / teacher_span, 1) if teacher_span else None,
        "train_seconds": trained.train.train_seconds if trained else None,
        "train_and_evaluate_seconds": trained.seconds if trained else None,
        "student_labels_per_s_wall": round(len(student) / student_wall, 1) if student_wall > 0 else None,
        "student_labels_per_s_engine": round(len(student) / stats_engine_s, 1) if stats_engine_s else None,
        "student_engine_seconds": round(stats_engine_s, 1) if stats_engine_s else None,
    }
    adapter: dict[str, Any] = {"val": {"base": None, "adapter": None}}
    if trained is not None:
        adapter = {"version": trained.version, "dataset_version": trained.dataset_version,
                   "val": {"base": trained.base.to_dict(), "adapter": trained.adapter.to_dict()}}
    return {
        "sessions": sessions,
        "ingested": ingest.enqueued,
        "duplicates": ingest.duplicates,
        "labelled": labelled,
        "labelled_teacher": len(teacher),
        "labelled_student": len(student),
        "escalated": escalated,
        "dead_lettered": dead,
        "lost": sessions - ingest.duplicates - labelled - dead,
        "in_flight": in_flight,
        "audit_ok": run.audit.ok and in_flight == 0,
        "finished": run.finished,
        "quality": _quality(student, run.references),
        "quality_all_labels": _quality(labels, run.references),
        "adapter": adapter,
        "throughput": throughput,
        "cost": {"teacher_per_1k_usd": cost.teacher_per_1k_usd if cost else None,
                 "student_per_1k_usd": cost.student_per_1k_usd if cost else None,
                 "savings": cost.savings if cost else None,
                 "teacher_usd": cost.teacher_usd if cost else None,
                 "student_usd": cost.student_usd if cost else None},
        "teacher": "replay (reference labels, priced as the real model)" if settings.teacher_backend
        == "replay" else settings.teacher_model,
        "student_gpu_usd_per_hour": settings.student_gpu_usd_per_hour,
        "stages": stages,
        "elapsed_s": run.elapsed_s,
        "run_dir": run.run_dir,
    }


def _figure(summary: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    counts = {"teacher": summary["labelled_teacher"], "student": summary["labelled_student"],
              "dead-lettered": summary["dead_lettered"], "lost": summary["lost"]}
    axes[0].bar(list(counts), list(counts.values()), color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"])
    axes[0].set_title("sessions by outcome")
    quality = summary["quality"]
    names = ["exact_match", "cosine", "within_contract"]
    axes[1].bar(names, [quality[n] for n in names], color="#55a868")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("student labels vs reference")
    val = summary["adapter"]["val"]
    if val.get("base") and val.get("adapter"):
        x = range(len(names))
        axes[2].bar([i - 0.2 for i in x], [val["base"][n] for n in names], width=0.4, label="base")
        axes[2].bar([i + 0.2 for i in x], [val["adapter"][n] for n in names], width=0.4, label="adapter")
        axes[2].set_xticks(list(x), names)
        axes[2].legend()
    axes[2].set_ylim(0, 1)
    axes[2].set_title("val split: base vs adapter")
    cost = summary["cost"]
    axes[3].bar(["teacher", "student"], [cost.get("teacher_per_1k_usd") or 0, cost.get("student_per_1k_usd") or 0],
                color=["#4c72b0", "#55a868"])
    axes[3].set_title("USD per 1,000 labels")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _table(rows: dict[str, Any]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def write_report(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = _figure(summary)
    paths = {"json": out_dir / "report.json", "png": out_dir / "report.png", "html": out_dir / "report.html"}
    paths["json"].write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    paths["png"].write_bytes(png)
    counts = {k: summary[k] for k in ("sessions", "ingested", "duplicates", "labelled", "labelled_teacher",
                                      "labelled_student", "escalated", "dead_lettered", "lost", "audit_ok")}
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>labelq demo report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
th,td{{border:1px solid #ccc;padding:4px 10px;text-align:left}}th{{background:#f4f4f4}}</style></head><body>
<h1>labelq demo report</h1><p>Teacher: {html.escape(str(summary['teacher']))}. Run {html.escape(summary['run_dir'])},
{summary['elapsed_s']} s.</p>
<img alt="plots" src="data:image/png;base64,{base64.b64encode(png).decode()}" style="max-width:100%">
<h2>Counts</h2>{_table(counts)}
<h2>Quality of student labels against the reference labels</h2>{_table(summary['quality'])}
<h2>Adapter (val split of its curated bucket)</h2>{_table({'version': summary['adapter'].get('version'),
    'base': summary['adapter']['val'].get('base'), 'adapter': summary['adapter']['val'].get('adapter')})}
<h2>Throughput</h2>{_table(summary['throughput'])}
<h2>Cost</h2>{_table({**summary['cost'], 'student GPU USD/hour (configured)': summary['student_gpu_usd_per_hour']})}
<h2>Stages (seconds from start)</h2>{_table(summary['stages'])}
</body></html>"""
    paths["html"].write_text(page, encoding="utf-8")
    return paths
