"""``labelq teach``: label sessions with the teacher directly (real-time or Batch API)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from labelq.app.cli.common import (
    err_console,
    friendly_errors,
    print_json_line,
    progress_bar,
    settings_of,
)
from labelq.redis_server import connect
from labelq.schemas import ChunkMessage, chunk_wire
from labelq.settings import Settings
from labelq.spec import load_spec
from labelq.store import ObjectStore, open_store
from producer.local import read_chunks
from workers.teacher.preflight import check_teacher


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
    dead-lettered; the batches are kept in the store, so running the same
    command again after a kill resumes them instead of paying twice.
    Refused before anything is read without an API key (OPENAI_API_KEY;
    LABELQ_TEACHER_BACKEND=replay for the offline teacher) or without a
    price for the teacher model (LABELQ_TEACHER_PRICES).
    """
    settings = settings_of(ctx)
    check_teacher(settings)  # a chosen backend, a usable key, a priced model: before a session is read
    spec = load_spec(task or settings.default_task, settings.specs_dir)
    client = connect(settings)
    store = open_store(settings)
    chunks, read = read_chunks(settings, sources, task=spec.name, route="seed", store=store, client=client)
    if batch_api:
        from workers.teacher.batch import BatchTeacher

        with progress_bar(total_items=None) as progress:
            bar = progress.add_task("teacher batch", total=None, info="")
            teacher = BatchTeacher(settings, spec, store, client, poll_s=poll_s,
                                   on_status=lambda text: progress.update(bar, info=text))
            sessions = [item for chunk in chunks for item in chunk.sessions]
            summary = asyncio.run(teacher.run(sessions)).to_dict()
    else:
        summary = _teach_realtime(settings, store, client, chunks)
    summary["sessions"] = read.enqueued + read.duplicates  # every valid session read, as before
    summary["rejected"] = sum(read.rejected.values())
    err_console.print(f"teacher: {summary}", highlight=False)
    if json_out:
        print_json_line(summary)


def _teach_realtime(settings: Settings, store: ObjectStore, client: Any,
                    chunks: list[ChunkMessage]) -> dict[str, Any]:
    from workers.teacher.tasks import run_teacher_chunk

    queue = list(chunks)
    sessions = sum(len(c.sessions) for c in chunks)
    totals = {"sessions": sessions, "labelled": 0, "dead_lettered": 0}
    with progress_bar(total_items=sessions) as progress:
        bar = progress.add_task("teacher", total=sessions, info="")
        while queue:
            chunk = queue.pop(0)

            def hand_back(c: ChunkMessage, items: list[Any]) -> None:
                queue.append(ChunkMessage.decode(chunk_wire(
                    c.task, c.route, [(i.session_id, i.content_hash, i.require_payload()) for i in items])))

            result = run_teacher_chunk(settings, store, client, chunk, requeue=hand_back)
            totals["labelled"] += result.labelled
            totals["dead_lettered"] += result.dead_lettered
            progress.update(bar, completed=totals["labelled"] + totals["dead_lettered"])
    return totals
