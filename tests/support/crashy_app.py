"""labelq's worker app with one injected fault: a chunk holding a session whose payload
carries ``POISON`` kills the process that runs it (``os._exit``, like a segfault or
the OOM killer would). Started as ``celery -A tests.support.crashy_app worker``."""

from __future__ import annotations

import os
from typing import Any

import workers.teacher.tasks as teacher_tasks
from labelq.app.worker_app import app
from labelq.schemas import ChunkMessage
from tests.support.chaos import POISON

_run = teacher_tasks.run_teacher_chunk


def _crash_on_poison(settings: Any, store: Any, client: Any, chunk: ChunkMessage, requeue: Any) -> Any:
    if any(POISON in str(item.payload) for item in chunk.sessions):
        os._exit(70)
    return _run(settings, store, client, chunk, requeue)


teacher_tasks.run_teacher_chunk = _crash_on_poison
__all__ = ["app"]
