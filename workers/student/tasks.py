"""The student's Celery task: one engine per worker process (solo pool), loaded at the first chunk."""

from __future__ import annotations

from labelq.engines import Adapter
from labelq.outcomes import ChunkOutcome
from labelq.queue.app import STUDENT_TASK, QueueApp
from labelq.queue.task import ChunkTask, register_chunk_task
from labelq.queue.worker import check_at_worker_start
from labelq.registry import restore_lost_registries, sweep_parked
from labelq.schemas import SHADOW_ROUTE, ChunkMessage
from workers.student.labeler import StudentRuntime, run_student_chunk
from workers.student.shadow import run_shadow_chunk, shadow_adapter

_RUNTIME: StudentRuntime | None = None


def _runtime(job: ChunkTask) -> StudentRuntime:
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = StudentRuntime(job.settings, job.store, job.redis)
    return _RUNTIME


_READY: dict[str, Adapter | None] = {}  # chunk id -> the adapter its ready check found, until it runs


def _student_ready(job: ChunkTask, chunk: ChunkMessage) -> None:
    """A chunk whose task has no adapter (or one that cannot be served here) pauses or parks before its
    claim-checked payloads are read: nothing of it is written while it waits. The adapter found is the
    one the chunk runs with (one look-up per chunk)."""
    _READY.clear()
    runtime = _runtime(job)
    # A shadow chunk never waits or parks: with no adapter to serve it is dropped (workers.student.shadow).
    _READY[chunk.chunk_id] = (shadow_adapter(runtime, chunk.task) if chunk.route == SHADOW_ROUTE
                              else runtime.adapter_for(chunk.task))


def _label_student_chunk(job: ChunkTask, chunk: ChunkMessage) -> ChunkOutcome:
    if chunk.route == SHADOW_ROUTE:
        adapter = (_READY.pop(chunk.chunk_id) if chunk.chunk_id in _READY
                   else shadow_adapter(_runtime(job), chunk.task))
        return run_shadow_chunk(_runtime(job), chunk, adapter)
    escalate = lambda c, items: job.republish("teacher", c, items, route="escalation")  # noqa: E731
    if chunk.chunk_id in _READY:
        return run_student_chunk(_runtime(job), chunk, escalate, _READY.pop(chunk.chunk_id))
    return run_student_chunk(_runtime(job), chunk, escalate)


def register(app: QueueApp) -> None:
    """Define the student task on ``app`` (the worker app, or a test's app); a student worker of it
    rebuilds adapter pointers Redis has lost, and moves back parked chunks that can be served, before
    it takes a chunk."""
    register_chunk_task(app, STUDENT_TASK, "student", _label_student_chunk, ready=_student_ready)
    check_at_worker_start(app, "student", restore_lost_registries)
    check_at_worker_start(app, "student", sweep_parked)
