"""The demo's report: counts, quality against reference labels, examples, label lengths, agreement and
throughput over time, adapter versions (gate, calibration), live student-teacher agreement, cost; PNG, HTML
and JSON.

``summarise`` turns a finished run into plain data (the ``--json`` line):
the counts the run itself saw (ingest, status, audit, stage clock) and the
sections derived from the run's store (:func:`label_sections`: label
records, adapters' training reports, the sessions file) and from the live
agreement windows the demo read at its end (``DemoRun.live_agreement``, also
kept as ``<run_dir>/live-agreement.json``). ``write_report`` renders it as
``report.json``, ``report.png`` (eight plots) and ``report.html``
(self-contained: the PNG is embedded; tables from
``labelq.app.report_html``). ``rerender`` rebuilds the derived sections of
a finished run's report from its store and its live-agreement file, keeping
the counts of its ``report.json`` (``labelq report``).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import redis

from labelq import keyspace
from labelq.app import report_data as data
from labelq.app import report_html as page
from labelq.errors import DecodeError, ObjectNotFound
from labelq.export import latest_labels
from labelq.keyspace import AdapterFile
from labelq.registry import Registry
from labelq.schemas import LabelRecord, parse_utc
from labelq.settings import Settings
from labelq.snapshot import AuditReport, StatusSnapshot
from labelq.store import ObjectStore, open_store

if TYPE_CHECKING:
    from producer.ingest import IngestSummary
    from trainer.reports import TrainingReport

TASK = "session-label"
SAMPLE_SIZE = 10
LIVE_AGREEMENT_FILE = "live-agreement.json"  # in the run's folder: DemoRun.live_agreement as a JSON list
ESCALATION_FLAG = "route:escalation"  # the teacher's flag on a label it gave a session a student escalated
STUDENT_COST_ASSUMPTION = ("student cost is an estimate: the students' engine seconds x "
                           "LABELQ_STUDENT_GPU_USD_PER_HOUR (${rate:.2f} per GPU-hour, a setting, not a bill); "
                           "teacher cost is the ledger's (tokens x the model's prices)")


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
    # The live agreement windows at the end of the run (labelq.agreement.read_agreement, WindowFigures.to_dict()):
    # Redis forgets them, so the demo also writes them to <run_dir>/live-agreement.json for rerender.
    live_agreement: tuple[dict[str, Any], ...] = ()


def _quality(records: list[LabelRecord], references: dict[str, str]) -> dict[str, Any]:
    from labelq.spec import load_spec
    from trainer.evaluate import EvalScores, score

    pairs = [(r.label, references[r.session_id]) for r in records if r.session_id in references]
    if not pairs:
        return EvalScores.empty().to_dict()
    return score([p for p, _ in pairs], [r for _, r in pairs], load_spec(TASK).contract).to_dict()


def _span_s(records: list[LabelRecord]) -> float:
    times = [parse_utc(r.created_at) for r in records]
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


def _training_reports(store: ObjectStore) -> dict[int, TrainingReport]:
    """Every adapter version's training report in the store (no Redis needed), by version."""
    from trainer.reports import TrainingReport

    reports = {}
    for key in store.list(keyspace.adapter_prefix(TASK) + "/v"):
        version = keyspace.adapter_version_of(key)
        if version is None or not key.endswith(f"/{AdapterFile.METRICS}"):
            continue
        try:
            reports[version] = TrainingReport.from_dict(orjson.loads(store.get_bytes(key)))
        except (ObjectNotFound, DecodeError, orjson.JSONDecodeError):
            continue
    return dict(sorted(reports.items()))


def summarise(run: DemoRun) -> dict[str, Any]:
    settings = run.settings
    store = open_store(settings)
    labels = latest_labels(store, tasks=[TASK])
    student = [r for r in labels if r.source == "student"]
    teacher = [r for r in labels if r.source == "teacher"]
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
    counts = {
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
    derived = label_sections(settings, store, labels, run.references, Path(run.run_dir) / "sessions.jsonl", counts,
                             live_windows=run.live_agreement)
    return {**counts, **derived}


def label_sections(settings: Settings, store: ObjectStore, labels: list[LabelRecord], references: dict[str, str],
                   sessions_file: Path, counts: Mapping[str, Any],
                   agreement_source: data.AgreementSource | None = None,
                   live_windows: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The report's sections that the run's store holds: quality, examples, label lengths, agreement and
    throughput over time, adapter versions, cost against teacher-only; and the live agreement windows
    (``live_windows``: ``WindowFigures.to_dict()`` rows), placed on the same clock as the rest (seconds from
    the first label). ``counts``: the rest of the summary (its cost figures and GPU price).
    ``agreement_source``: rows of (version, window start, n, exact, cosine) from elsewhere; default: student
    labels against the reference labels."""
    student = [r for r in labels if r.source == "student"]
    teacher = [r for r in labels if r.source == "teacher"]
    created = {r.session_id: parse_utc(r.created_at) for r in labels}
    origin = min(created.values(), default=None)
    window_s = data.window_s_for((max(created.values()) - origin).total_seconds() if origin else 0)
    if agreement_source is None:
        def agreement_source() -> list[data.AgreementRow]:
            return [] if origin is None else data.reference_agreement(_scored(student, references), origin, window_s)
    replay = settings.teacher_backend == "replay"
    reports = _training_reports(store)
    return {
        "quality": _quality(student, references),
        "quality_all_labels": _quality(labels, references),
        "samples": _samples(settings, labels, references, sessions_file),
        "label_lengths": {"series": list(_length_series(reports, labels, references, replay))},
        "agreement": {"compared_with": "reference labels" + (" (the replay teacher's answers)" if replay else ""),
                      "window_s": window_s, "rows": [r.to_dict(origin) for r in agreement_source()]},
        "throughput_over_time": {
            "window_s": window_s,
            "rows": [r.to_dict() for r in data.throughput_rows(
                {"teacher": [parse_utc(r.created_at) for r in teacher],
                 "student": [parse_utc(r.created_at) for r in student]}, window_s)]},
        "adapters": data.adapter_rows(reports.values(),
                                      Counter(r.adapter_version for r in student if r.adapter_version is not None)),
        "live_agreement": {"window_s": settings.agreement_window_s,
                           "rows": data.live_agreement_rows(live_windows, origin)},
        "cost": _cost(counts, len(teacher), len(student)),
    }


def _cost(counts: Mapping[str, Any], teacher_labels: int, student_labels: int) -> dict[str, Any]:
    cost, rate = counts["cost"], counts["student_gpu_usd_per_hour"]
    table = data.cost_table(teacher_usd=cost.get("teacher_usd") or 0.0, student_usd=cost.get("student_usd") or 0.0,
                            teacher_labels=teacher_labels, student_labels=student_labels, usd_per_gpu_hour=rate,
                            student_engine_s=counts["throughput"].get("student_engine_seconds") or 0.0)
    return {**cost, **table, "assumption": STUDENT_COST_ASSUMPTION.format(rate=rate)}


def _scored(records: list[LabelRecord], references: dict[str, str]) -> list[data.ScoredLabel]:
    """Each record's exact match and cosine against its reference label (the same measures as ``score``)."""
    from labelq.contract import check, normalise_for_match
    from labelq.spec import load_spec
    from trainer.evaluate import embedder

    pairs = [(r, references[r.session_id]) for r in records if r.session_id in references]
    if not pairs:
        return []
    contract = load_spec(TASK).contract
    model = embedder()
    emb_p = model.encode([check(r.label, contract).label or r.label for r, _ in pairs], normalize_embeddings=True,
                         convert_to_numpy=True)
    emb_r = model.encode([ref for _, ref in pairs], normalize_embeddings=True, convert_to_numpy=True)
    cosines = (emb_p * emb_r).sum(axis=1)
    return [data.ScoredLabel(r.adapter_version, parse_utc(r.created_at),
                             normalise_for_match(r.label) == normalise_for_match(ref), float(c))
            for (r, ref), c in zip(pairs, cosines, strict=True)]


def _length_series(reports: Mapping[int, TrainingReport], labels: list[LabelRecord], references: dict[str, str],
                   replay: bool) -> Iterable[dict[str, Any]]:
    """Words per label: the reference labels, the bare base model zero-shot (its val-split answers in the
    first adapter's training report), then each adapter version's labels in this run (its records)."""
    from trainer.evaluate import words_histogram

    yield data.LengthSeries("reference labels", words_histogram(len(r.split()) for r in references.values()),
                            "every session" + (" (the replay teacher's answers)" if replay else "")).to_dict()
    if reports:
        first = next(iter(reports.values()))
        base = data.LengthSeries("base model, zero-shot", first.base.words_histogram,
                                 f"val split of {first.dataset_version} (training report of v{first.version})")
        yield base.to_dict() if first.base.words_histogram else {
            **base.to_dict(), "n": first.base.n, "mean_words": first.base.mean_words}  # older report: a mean only
    by_version: dict[int | None, list[int]] = {}
    for r in labels:
        if r.source == "student":
            by_version.setdefault(r.adapter_version, []).append(r.words)
    for version, words in sorted(by_version.items(), key=lambda item: -1 if item[0] is None else item[0]):
        name = "base model (no adapter yet)" if version is None else f"adapter v{version}"
        yield data.LengthSeries(name, words_histogram(words), "student labels of this run").to_dict()


def _sample_kind(record: LabelRecord) -> str:
    if record.source == "teacher":
        return "escalated" if ESCALATION_FLAG in record.flags else "teacher"
    return record.source


def _samples(settings: Settings, labels: list[LabelRecord], references: dict[str, str],
             sessions_file: Path) -> list[dict[str, Any]]:
    """A deterministic mix of sessions (student-labelled, escalated, teacher-labelled), each with the start of
    its rendering (what the models saw) and its labels."""
    from labelq.render import render_for_task
    from labelq.spec import load_spec

    by_id = {r.session_id: r for r in labels}
    chosen = data.choose_sample({s: _sample_kind(r) for s, r in by_id.items()}, SAMPLE_SIZE)
    payloads = _payloads(sessions_file, set(chosen))
    spec = load_spec(TASK)
    rows = []
    for session_id in chosen:
        record, payload = by_id[session_id], payloads.get(session_id)
        student = record.source == "student"
        rows.append({
            "session_id": session_id,
            "labelled_by": _sample_kind(record),
            "session": data.clip_lines(render_for_task(spec, settings, payload)) if payload else None,
            "reference_label": references.get(session_id),
            "teacher_label": None if student else record.label,
            "student_label": record.label if student else None,
            "confidence": record.confidence if student else None,
            "adapter_version": record.adapter_version,
        })
    return rows


def _payloads(sessions_file: Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The sessions named in ``wanted``, read from the run's sessions file (streamed); none when it is gone."""
    found: dict[str, dict[str, Any]] = {}
    try:
        with sessions_file.open("rb") as fh:
            for line in fh:
                session = orjson.loads(line)
                if session.get("session_id") in wanted:
                    found[session["session_id"]] = session
                    if len(found) == len(wanted):
                        break
    except OSError:
        pass
    return found


def references_of(sessions_file: Path) -> dict[str, str]:
    """Session id -> reference label, from a demo run's sessions file."""
    with sessions_file.open("rb") as fh:
        return {s["session_id"]: s["_reference"]["label"] for s in map(orjson.loads, fh)}


def rerender(settings: Settings, run_dir: Path, out_dir: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """Rebuild a finished run's report: the counts from its ``report.json``, the rest from its store and its
    live-agreement file."""
    counts = orjson.loads((out_dir / "report.json").read_bytes())
    store = open_store(settings)
    sessions_file = run_dir / "sessions.jsonl"
    summary = {**counts, **label_sections(settings, store, latest_labels(store, tasks=[TASK]),
                                          references_of(sessions_file), sessions_file, counts,
                                          live_windows=_live_windows(run_dir, counts))}
    return summary, write_report(summary, out_dir)


def _live_windows(run_dir: Path, counts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's live agreement windows: its ``live-agreement.json`` when there is one (Redis, where they were
    counted, has forgotten them by now), else the rows its report already had, else none."""
    try:
        windows = orjson.loads((run_dir / LIVE_AGREEMENT_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        windows = None
    if isinstance(windows, list) and all(isinstance(w, dict) and "window_start" in w for w in windows):
        return windows
    kept = counts.get("live_agreement")
    return list(kept.get("rows", [])) if isinstance(kept, dict) else []


def write_report(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = page.figure(summary)
    paths = {"json": out_dir / "report.json", "png": out_dir / "report.png", "html": out_dir / "report.html"}
    paths["json"].write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    paths["png"].write_bytes(png)
    paths["html"].write_text(page.page("labelq demo report", _lead(summary), png, _sections(summary)),
                             encoding="utf-8")
    return paths


def _lead(s: Mapping[str, Any]) -> str:
    state = "finished" if s["finished"] else "timed out"
    audit = "the audit balances" if s["audit_ok"] else "<strong>the audit does not balance</strong>"
    return (f"{s['sessions']:,} sessions, {s['labelled']:,} labelled ({s['labelled_teacher']:,} by the teacher, "
            f"{s['labelled_student']:,} by students), {s['dead_lettered']:,} dead-lettered, {s['lost']:,} lost; "
            f"{state} in {page.fmt(s['elapsed_s'])} s, {audit}. Teacher: {html.escape(str(s['teacher']))}. "
            f"Run: <code>{html.escape(s['run_dir'])}</code>.")


def _sections(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    counts = {k: s[k] for k in ("sessions", "ingested", "duplicates", "labelled", "labelled_teacher",
                                "labelled_student", "escalated", "dead_lettered", "lost", "in_flight", "audit_ok",
                                "finished")}
    quality_cols = ["n", "exact_match", "cosine", "within_contract", "mean_words"]
    quality = [{"labels": "students, this run", **s["quality"]},
               {"labels": "all labels, this run", **s["quality_all_labels"]}]
    val = s["adapter"]["val"]
    if val.get("base"):
        quality += [{"labels": f"base model, zero-shot (val split of {s['adapter'].get('dataset_version')})",
                     **val["base"]},
                    {"labels": f"adapter v{s['adapter'].get('version')} (same val split)", **val["adapter"]}]
    replay = str(s["teacher"]).startswith("replay")
    reference = "reference label" + (" (= the replay teacher's answer)" if replay else "")
    samples = [{**row, "session": page.pre(row["session"] or "(session not in the run's sessions file)"),
                "adapter_version": None if row["adapter_version"] is None else f"v{row['adapter_version']}"}
               for row in s["samples"]]
    lengths = [{k: v for k, v in row.items() if k != "histogram"} for row in s["label_lengths"]["series"]]
    agreement, throughput = s["agreement"], s["throughput_over_time"]
    agreement_rows = [{**r, "version": "base" if r["version"] is None else f"v{r['version']}"}
                      for r in agreement["rows"]]
    cost = {k: v for k, v in s["cost"].items() if k != "assumption"}
    by_window = data.throughput_by_window(throughput["rows"])
    stages = [c for c in (by_window[0] if by_window else {}) if c != "window_start_s"]
    return [
        ("Counts and quality", _columns(
            page.kv_table(counts),
            page.rows_table(quality, ["labels", *quality_cols], caption="Quality against the reference labels") +
            "<p class=note>Exact match after normalisation; cosine of sentence embeddings (all-MiniLM-L6-v2); "
            "within contract: the task's output contract holds.</p>")),
        ("Sample sessions", page.rows_table(
            samples, ["session_id", "labelled_by", "session", "reference_label", "teacher_label", "student_label",
                      "confidence", "adapter_version"],
            {"session_id": "session", "session": "what the models saw (start)", "reference_label": reference,
             "labelled_by": "labelled by", "adapter_version": "adapter"}, cls="samples",
            widths=(9, 7, 35, 13, 10, 13, 7, 6)) +
         "<p class=note>Chosen deterministically (a hash of the session id): students' labels, sessions students "
         "escalated (their doubtful answer is not kept; the teacher's replaces it) and teacher-labelled ones.</p>"),
        ("Label length (words)", page.rows_table(lengths)),
        ("Agreement and throughput over time", _columns(
            page.rows_table(agreement_rows, ["version", "window_start_s", "n", "exact", "cosine"],
                            {"window_start_s": "window start (s)", "exact": "exact match"},
                            caption=f"Agreement per adapter version ({agreement['window_s']} s windows)"),
            page.rows_table(by_window, ["window_start_s", *stages],
                            {"window_start_s": "window start (s)", **{st: f"{st} labels/s" for st in stages}},
                            caption=f"Labels per second per stage ({throughput['window_s']} s windows)"),
            page.kv_table(s["throughput"], "Whole run")) +
         f"<p class=note>Agreement: student labels compared with the {html.escape(agreement['compared_with'])}, "
         "in windows of the time each label was written; a dash in a stage's column: it wrote nothing then.</p>"),
        ("Adapter versions", page.adapters_table(s.get("adapters", []))),
        ("Live agreement", page.live_agreement_table(s.get("live_agreement") or {"window_s": None, "rows": []})),
        ("Cost, adapter and stages", _columns(
            page.kv_table(cost, "Cost"),
            page.kv_table({k: v for k, v in s["adapter"].items() if k != "val"}, "Serving adapter") +
            page.rows_table([{"stage": k, **v} for k, v in s["stages"].items()], ["stage", "start", "end"],
                            caption="Stages (seconds from the start)")) +
         f"<p class=note>Assumption: {html.escape(s['cost']['assumption'])}. Teacher-only: every label at the "
         "teacher's price per label in this run.</p>"),
    ]


def _columns(*parts: str) -> str:
    """Side by side where the page is wide enough, stacked where it is not."""
    return "<div class=cols>" + "".join(f"<div>{p}</div>" for p in parts) + "</div>"
