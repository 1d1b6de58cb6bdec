"""What ``labelq status`` and ``labelq audit`` report, as typed values.

``labelq.status.gather`` and ``labelq.audit.audit`` read Redis and return these;
the CLI, the demo and its report read attributes. ``to_dict()`` is the JSON
that ``--json`` prints (``from_dict`` reads it back)::

    StatusSnapshot
      queues: {queue: chunks waiting}     dead_letter: {reason: sessions}
      (parked chunks, which wait for a first adapter off the queue: per task and in totals)
      tasks: {task: TaskStatus}           totals: StatusTotals
      waiting: {stage: Waiting}          redis_memory: RedisMemoryStatus
    TaskStatus
      counts ...  routing: RoutingState   cost: CostSummary
      dead_letter: {reason: sessions}     adapter: AdapterStatus   teacher: TeacherStatus
    AuditReport
      ok                                  tasks: {task: TaskBalance}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from labelq.ledger import CostSummary, ModelSpend
from labelq.routing import RoutingState
from labelq.schemas import decode_as


@dataclass(frozen=True, slots=True)
class AdapterStatus:
    current: int | None  # the promoted version
    pinned: int | None  # a pin beats the promoted version

    @property
    def serving(self) -> int | None:
        return self.pinned or self.current


@dataclass(frozen=True, slots=True)
class TeacherStatus:
    cost_usd: float
    cache_hits: int
    models: dict[str, ModelSpend]
    budget_usd: float | None  # None: the task has no spec here, so no budget to show
    budget_spent_usd: float  # in the current budget period
    budget_reserved_usd: float
    budget_remaining_usd: float | None  # None: no budget to show
    budget_period: str  # total, month or day (LABELQ_TEACHER_BUDGET_PERIOD)
    budget_period_id: str  # total, 2026-11, 2026-11-21
    budget_resets_at: str | None  # UTC ISO time the next period starts; None for total
    paused: str | None  # why the teacher waits (budget spent, key refused); None when it works


@dataclass(frozen=True, slots=True)
class QualityStatus:
    """Live student-teacher agreement of the serving version in its judged window, and the drift mark, as
    the trainer's monitor last judged them (``labelq.agreement``, ``trainer.monitor``)."""

    version: int | None
    window_start: int | None = None  # unix time; None before any pair
    n: int = 0  # pairs scored in the window
    exact: float | None = None  # share of pairs equal after normalisation
    cosine: float | None = None  # mean cosine of the pairs embedded so far
    within: float | None = None  # share of shadow answers within the output contract
    degraded: bool = False
    reasons: list[str] = field(default_factory=list)
    rolled_back: dict[str, Any] | None = None  # the last automatic rollback of the task
    checked_at: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskStatus:
    ingested: int
    duplicates: int
    labelled_teacher: int
    labelled_student: int
    escalated_student: int
    student_engine_s: float
    dead_lettered: int
    routing: RoutingState
    cost: CostSummary
    dead_letter: dict[str, int]  # sessions dead-lettered by workers, by reason
    adapter: AdapterStatus
    teacher: TeacherStatus
    parked_chunks: int = 0  # student chunks waiting off the queue for a first adapter (labelq.queue.parking)
    quality: QualityStatus | None = None  # None: no verdict yet (no adapter, or no trainer polling)


@dataclass(frozen=True, slots=True)
class Waiting:
    """What a stage's workers wait on (``redis``, ``store``, ``provider``, ``engine``, ``configuration``)."""

    on: str
    kind: str  # outage or configuration
    since: float  # unix time of the first failure of this wait
    detail: str


@dataclass(frozen=True, slots=True)
class StatusTotals:
    ingested: int
    duplicates: int
    dead_lettered: int
    queued_chunks: int
    parked_chunks: int = 0  # not in queued_chunks: no worker takes them, KEDA does not count them


@dataclass(frozen=True, slots=True)
class RedisMemoryStatus:
    """Redis memory against its ceiling (``labelq.redis_memory``)."""

    used_bytes: int
    max_bytes: int  # maxmemory; 0: no ceiling
    share: float | None  # used / max; None without a ceiling
    high_water: float  # producers pause above this share of max_bytes
    reserve_bytes: int  # held for workers to drain a full Redis; 0: released (or none)


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    queues: dict[str, int]
    dead_letter: dict[str, int]  # every stage (ingest included), by reason
    tasks: dict[str, TaskStatus]
    totals: StatusTotals
    waiting: dict[str, Waiting]  # stage -> what its workers wait on; empty when nothing waits
    redis_memory: RedisMemoryStatus | None = None  # None: read from a snapshot that had none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> StatusSnapshot:
        return decode_as(cls, data, "status snapshot")


@dataclass(frozen=True, slots=True)
class TaskBalance:
    """``ingested = labelled + dead_lettered + in_flight + gap``; a gap is a loss (negative: a double count).

    ``claimed_not_enqueued``: sessions in the dedupe sets beyond those counted
    as enqueued into them, claimed by a producer that never enqueued them
    (labelq before claims and chunks moved in one step); lost too, since a
    re-ingest within the dedupe window calls them duplicates.
    """

    ingested: int
    labelled: int
    labelled_teacher: int
    labelled_student: int
    dead_lettered: int
    in_flight: int
    gap: int
    claimed_not_enqueued: int = 0


@dataclass(frozen=True, slots=True)
class AuditReport:
    ok: bool
    tasks: dict[str, TaskBalance]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> AuditReport:
        return decode_as(cls, data, "audit report")
