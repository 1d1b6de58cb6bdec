"""What a chunk task produced: one typed outcome for metrics, the ``chunk_done`` log line and callers.

The teacher and student chunk functions return a ``ChunkOutcome``; the base
chunk task (``labelq.queue.task``) hands it to ``labelq.metrics.observe_chunk``
and logs ``as_log()``. Celery task results are ignored (``task_ignore_result``),
so the task returns the same JSON-able ``as_log()`` dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

OutcomeStatus = Literal["done", "decode_error", "poison_chunk", "poison_chunk_split", "payload_missing", "parked",
                        "shadow", "shadow_dropped"]


@dataclass(frozen=True, slots=True)
class TeacherSpend:
    """What the teacher's calls for one chunk cost (cache hits are free)."""

    model: str | None  # None when nothing was labelled
    usd: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class StudentEngine:
    """The student's one engine call for a chunk."""

    adapter_version: int | None  # None: the bare base model served
    engine_s: float
    backend: str
    student_usd: float  # engine seconds x LABELQ_STUDENT_GPU_USD_PER_HOUR


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """Counts of one chunk's sessions, and the stage's spend when it ran an engine or paid the teacher."""

    status: OutcomeStatus = "done"
    labelled: int = 0
    dead_lettered: int = 0
    escalated: int = 0  # student answers sent back to the teacher
    handed_back: int = 0  # teacher sessions put back on the queue, unfinished at the deadline
    split_sessions: int = 0  # poison_chunk_split: sessions of the chunk that was halved
    shadowed: int = 0  # shadow: shadow records written (labelq.agreement), not labels
    teacher: TeacherSpend | None = None
    student: StudentEngine | None = None

    def as_log(self) -> dict[str, Any]:
        """The ``chunk_done`` log fields (and the task's JSON result): only what applies to this outcome."""
        if self.status in ("decode_error", "parked", "shadow_dropped"):
            return {"status": self.status}
        if self.status == "shadow":
            return {"status": self.status, "shadowed": self.shadowed,
                    **(asdict(self.student) if self.student is not None else {})}
        if self.status == "poison_chunk_split":
            return {"status": self.status, "sessions": self.split_sessions}
        if self.status in ("poison_chunk", "payload_missing"):
            return {"status": self.status, "dead_lettered": self.dead_lettered}
        out: dict[str, Any] = {"labelled": self.labelled, "dead_lettered": self.dead_lettered}
        if self.teacher is not None:
            out["handed_back"] = self.handed_back
            out.update(asdict(self.teacher))
        if self.student is not None:
            out["escalated"] = self.escalated
            out.update(asdict(self.student))
        return out
