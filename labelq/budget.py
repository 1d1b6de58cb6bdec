"""Budget periods and the durable record of teacher spend (read by the teacher and ``labelq status``).

A task's budget (``LABELQ_TEACHER_BUDGET_USD``, or the spec's ``budget_usd``) caps its teacher
spend in one period, ``LABELQ_TEACHER_BUDGET_PERIOD``: ``total`` (the task's whole life),
``month`` or ``day`` (UTC calendar). Each period has its own Redis keys,
``budget:<task>:<period id>`` (``total``, ``2026-11``, ``2026-11-21``), so a new month starts
at zero without anyone resetting anything; a month's or a day's keys expire a week after it ends.

Redis decides every reservation, but Redis can be flushed or lost, so spend is also kept in the
object store: each writer (a teacher worker process, a Batch API job) owns one object per period,
``budget/<task>/<period>/<writer>.json`` (:class:`SpendRecord`), with its high-water mark: the money
it has sent or is about to send. Only its writer writes an object, so workers never race on a
read-modify-write; the durable spend is the sum over the objects (:func:`durable_spent_micro`).
When a period's Redis totals are missing, they are started from the larger of the two records;
``workers/teacher/budget.py`` explains why that can never reopen money already spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field

from labelq import keyspace
from labelq.errors import DecodeError
from labelq.keyspace import BudgetField
from labelq.ledger import MICRO
from labelq.schemas import utc_now_iso
from labelq.settings import Settings
from labelq.store import ObjectStore

Period = Literal["total", "month", "day"]
TOTAL: Final = "total"
ENDED_PERIOD_KEPT = timedelta(days=7)  # late settles (a batch collected after midnight) still find their keys
SPEND_RECORD_VERSION: Final = 1


def period_id(period: Period, now: datetime | None = None) -> str:
    """The id of the period ``now`` (UTC) falls in: ``total``, ``2026-11`` or ``2026-11-21``."""
    if period == "total":
        return TOTAL
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y-%m") if period == "month" else when.strftime("%Y-%m-%d")


def period_end(pid: str) -> datetime | None:
    """When a period ends and the next one starts (UTC midnight); None for ``total``."""
    if pid == TOTAL:
        return None
    parts = [int(p) for p in pid.split("-")]
    if len(parts) == 3:
        return datetime(parts[0], parts[1], parts[2], tzinfo=UTC) + timedelta(days=1)
    year, month = parts
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def keys_expire_at_ms(pid: str) -> int:
    """When a period's Redis keys may go (unix ms, a week after it ends); 0: never (``total``)."""
    end = period_end(pid)
    return 0 if end is None else int((end + ENDED_PERIOD_KEPT).timestamp() * 1000)


class SpendRecord(BaseModel):
    """One writer's durable spend in one budget period: ``budget/<task>/<period>/<writer>.json``.

    ``high_water_micro`` is never below what the writer has sent: it is written before a call
    goes out, and lowered to the exact spend only when none of the writer's calls is in flight.
    """

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = SPEND_RECORD_VERSION
    task: str
    period: str
    writer: str
    high_water_micro: int = Field(ge=0)
    updated_at: str = Field(default_factory=utc_now_iso)


def read_spend_record(store: ObjectStore, path: str) -> SpendRecord:
    try:
        return SpendRecord.model_validate_json(store.get_bytes(path))
    except ValueError as exc:
        raise DecodeError(f"unreadable budget spend record {path!r}: {exc}") from exc


def durable_spent_micro(store: ObjectStore, task: str, pid: str, *, but: str | None = None) -> int:
    """The durable spend of a period: the sum of every writer's high-water mark (``but`` one writer,
    who knows its own spend better than its record does).

    An unreadable record raises (never counted as zero: that would reopen its money).
    """
    records = (read_spend_record(store, path) for path in store.list(keyspace.budget_spend_prefix(task, pid)))
    return sum(r.high_water_micro for r in records if r.writer != but)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A task's budget in the current period, as ``labelq status`` shows it."""

    period: Period
    period_id: str
    spent_usd: float
    reserved_usd: float
    resets_at: str | None  # UTC ISO time the next period starts; None for ``total``
    from_store: bool  # Redis has not started this period's totals yet: spent is the durable record's


def seed_floor_micro(store: ObjectStore, task: str, pid: str, legacy_spent_micro: int,
                     own: tuple[str, int] | None = None) -> int:
    """Where a period's Redis totals start when Redis has none: the durable spend, and for ``total``
    at least what the budget hash of before budget periods (``keyspace.budget_legacy``) had spent.

    ``own`` is the seeding writer's id and its exact committed amount, counted instead of its record
    (whose high-water mark also holds the call it is about to reserve, and its unused block).
    """
    durable = durable_spent_micro(store, task, pid, but=own[0] if own else None) + (own[1] if own else 0)
    return max(durable, legacy_spent_micro if pid == TOTAL else 0)


BUDGET_STATE_FIELDS = (BudgetField.SPENT, BudgetField.RESERVED, BudgetField.SEEDED)  # what budget_state reads


def budget_state(client: redis.Redis, settings: Settings, task: str, store: ObjectStore | None = None,
                 *, now: datetime | None = None) -> BudgetState:
    """Spent and reserved in the current period. When Redis holds no totals for it (flushed, or no
    call yet this period) and ``store`` is given, spent comes from the durable record instead."""
    pid = period_id(settings.teacher_budget_period, now)
    raw = client.hmget(keyspace.budget_keys(settings, task, pid)[0], BUDGET_STATE_FIELDS)
    legacy = None
    if raw[2] is None and store is not None:
        legacy = client.hget(keyspace.budget_legacy(settings, task), BudgetField.SPENT)
    return budget_state_from(settings, task, pid, raw, legacy, store)


def budget_state_from(settings: Settings, task: str, pid: str, totals: Sequence[bytes | str | None],
                      legacy_spent: bytes | str | None, store: ObjectStore | None) -> BudgetState:
    """The budget state from the period's totals (``BUDGET_STATE_FIELDS`` of ``keyspace.budget_keys[0]``)
    and the pre-period budget's spent field (``keyspace.budget_legacy``), read by the caller (status
    pipelines them). Only when Redis has no totals for the period and ``store`` is given, the store is read."""
    spent, reserved = (int(v or 0) for v in totals[:2])
    from_store = totals[2] is None and store is not None
    if from_store and store is not None:
        spent = max(spent, seed_floor_micro(store, task, pid, int(legacy_spent or 0)))
    end = period_end(pid)
    return BudgetState(period=settings.teacher_budget_period, period_id=pid, spent_usd=spent / MICRO,
                       reserved_usd=reserved / MICRO, resets_at=None if end is None else end.isoformat(),
                       from_store=from_store)
