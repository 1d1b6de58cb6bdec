"""``labelq teach``: label sessions with the teacher directly (real-time or Batch API)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
import typer

from labelq.app.cli.common import (
    err_console,
    friendly_errors,
    print_json_line,
    progress_bar,
    settings_of,
)
from labelq.deadletter import DeadLetterSink
from labelq.hashing import content_hash
from labelq.redis_server import connect
from labelq.schemas import ChunkMessage, chunk_wire
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.store import ObjectStore, open_store
from producer.ingest import rejection_letter
from producer.sources import iter_source
from producer.validate import Accepted, Limits, Rejected, validate


def _read(settings: Settings, store: ObjectStore, client: Any, sources: list[str],
          task: str) -> tuple[list[tuple[Accepted, dict[str, Any]]], int]:
    limits = Limits.from_settings(settings)
    sink = DeadLetterSink(settings, store, client, stage="ingest")
    out: list[tuple[Accepted, dict[str, Any]]] = []
    rejected = 0
    for spec in sources:
        for record in iter_source(spec, max_bytes=settings.max_session_bytes,
                                  open_store=lambda url: open_store(settings, url)):
            result = validate(record, limits)
            if isinstance(result, Rejected):
                rejected += 1
                sink.add(rejection_letter(record, result, task, settings.dead_letter_raw_max_bytes))
            else:
                out.append((result, orjson.loads(result.raw)))
    sink.flush()
    return out, rejected


@friendly_errors
def teach(
    ctx: typer.Context,
    sources: Annotated[list[str], typer.Argument(help="Sessions: files (JSONL/JSON array/.gz), '-', or s3://...")],
    task: Annotated[str | None, typer.Option(help="Task spec to label for.")] = None,
    batch_api: Annotated[bool, typer.Option("--batch-api", help="Use the OpenAI Batch API (half price, slower).")] = False,
    poll_s: Annotated[float, typer.Option(min=0.01, help="Seconds between batch status polls.")] = 30.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON summary as the last line.")] = False,
) -> None:
    """Label a seed set with the teacher now, without queues or workers.

    Labels go to labels/teacher/<task>/ like the workers' output; the budget,
    cache, ledger and output contract apply. With --batch-api, failed or
    expired rows are resubmitted until each session is labelled or
    dead-lettered.
    """
    settings = settings_of(ctx)
    spec = load_spec(task or settings.default_task, settings.specs_dir)
    client = connect(settings)
    store = open_store(settings)
    sessions, rejected = _read(settings, store, client, sources, spec.name)
    if batch_api:
        from workers.teacher.batch import BatchTeacher

        with progress_bar(total_items=None) as progress:
            bar = progress.add_task("teacher batch", total=None, info="")
            teacher = BatchTeacher(settings, spec, store, client, poll_s=poll_s,
                                   on_status=lambda text: progress.update(bar, info=text))
            summary = asyncio.run(teacher.run(sessions)).to_dict()
    else:
        summary = _teach_realtime(settings, store, client, spec.name, sessions)
    summary["rejected"] = rejected
    err_console.print(f"teacher: {summary}", highlight=False)
    if json_out:
        print_json_line(summary)


def _teach_realtime(settings: Settings, store: ObjectStore, client: Any, task: str,
                    sessions: list[tuple[Accepted, dict[str, Any]]]) -> dict[str, Any]:
    from workers.teacher.tasks import run_teacher_chunk

    queue: list[ChunkMessage] = []
    for start in range(0, len(sessions), settings.chunk_size):
        part = sessions[start:start + settings.chunk_size]
        queue.append(ChunkMessage.decode(chunk_wire(
            task, "seed", [(a.session_id, content_hash(p), p) for a, p in part])))
    totals = {"sessions": len(sessions), "labelled": 0, "dead_lettered": 0}
    with progress_bar(total_items=len(sessions)) as progress:
        bar = progress.add_task("teacher", total=len(sessions), info="")
        while queue:
            chunk = queue.pop(0)

            def hand_back(c: ChunkMessage, items: list[Any]) -> None:
                queue.append(ChunkMessage.decode(chunk_wire(
                    c.task, c.route, [(i.session_id, i.content_hash, i.payload) for i in items])))

            result = run_teacher_chunk(settings, store, client, chunk, requeue=hand_back)
            totals["labelled"] += result.labelled
            totals["dead_lettered"] += result.dead_lettered
            progress.update(bar, completed=totals["labelled"] + totals["dead_lettered"])
    return totals
