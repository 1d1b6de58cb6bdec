"""The student's Celery task: one engine per worker process (solo pool), loaded at the first chunk."""

from __future__ import annotations

from celery import Celery

from labelq.outcomes import ChunkOutcome
from labelq.queue.app import STUDENT_TASK
from labelq.queue.task import ChunkTask
from labelq.schemas import ChunkMessage
from workers.student.labeler import StudentRuntime, run_student_chunk

_RUNTIME: StudentRuntime | None = None


def register(app: Celery) -> None:
    """Define the student task on ``app`` (the worker app, or a test's app)."""

    @app.task(name=STUDENT_TASK, base=ChunkTask, bind=True, stage="student", shared=False)  # type: ignore[untyped-decorator]
    def label_student_chunk(self: ChunkTask, chunk: ChunkMessage) -> ChunkOutcome:
        from labelq.queue.republish import republish

        global _RUNTIME
        if _RUNTIME is None:
            _RUNTIME = StudentRuntime(self.settings, self.store, self.redis)
        return run_student_chunk(
            _RUNTIME, chunk,
            escalate=lambda c, items: republish(self.settings, self.app, self.redis, "teacher", c, items,
                                                route="escalation"),
        )
