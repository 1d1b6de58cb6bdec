"""Live student-teacher agreement: shadow labels of the teacher sample, paired and counted.

In the steady phase the producer sends each session of the teacher sample
(``route=sample``) to the teacher as before, and also to the student queue as
a *shadow* chunk (``route=shadow``, :data:`labelq.schemas.SHADOW_ROUTE`). The
serving student labels it without escalation and writes a shadow record
(``shadow/<task>/<chunk>.jsonl``; not a label: export, audit and curation
never read it, and the audit does not count shadow chunks in flight). Both
workers then offer their half of each session's pair (:func:`offer_teacher`,
:func:`offer_shadow`): a small Redis hash per content hash
(``agreement_pair.lua``) holds the first half until the second arrives, which
takes it out and scores the pair, once:

* **exact**: the two answers equal after :func:`labelq.contract.normalise_for_match`;
* **within**: the shadow answer is within the output contract;
* **cosine**: sentence-embedding cosine, computed later in batches by the
  trainer's monitor (``trainer.monitor``: the embedder lives there); the pair
  waits on a bounded list (``agreement_cosine_backlog``) meanwhile.

Counts are kept per adapter version (the shadow's) and per window of
``agreement_window_s`` (the window the pair was scored in): ``n``, ``exact``,
``within``, ``cosine_sum``, ``cosine_n`` (:class:`labelq.keyspace.AgreementField`),
indexed by a sorted set per task. Memory is bounded: a waiting half expires
after ``agreement_pair_ttl_s``, a window ``agreement_keep_windows`` windows
after it starts, and the index is trimmed to those windows at each write.

Counting is at least as good as the two workers' bookkeeping: a chunk that
dies between its commit and its offer loses those pairs (a sample statistic;
nothing else depends on it), and a redelivered shadow chunk offers nothing
again (its ``done`` marker).

:func:`read_agreement` gives every kept window (per version), what the report
and the monitor read; :class:`QualityState` is the monitor's last verdict per
task (figures, degraded, last rollback), which status and metrics show.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import redis

from labelq import keyspace, lua
from labelq.contract import normalise_for_match
from labelq.drift import WindowFigures
from labelq.keyspace import AgreementField, PairField
from labelq.schemas import LabelRecord, ShadowRecord
from labelq.settings import Settings
from labelq.snapshot import QualityStatus

__all__ = [
    "QualityState", "ScoredPair", "add_cosines", "offer_shadow", "offer_teacher", "pop_for_cosine",
    "read_agreement", "read_states", "window_of", "write_state",
]


def window_of(settings: Settings, now_s: float | None = None) -> int:
    """The start (unix time) of the window ``now_s`` falls in."""
    now = time.time() if now_s is None else now_s
    return int(now // settings.agreement_window_s * settings.agreement_window_s)


def _kept_s(settings: Settings) -> int:
    return settings.agreement_window_s * settings.agreement_keep_windows


@dataclass(frozen=True, slots=True)
class ScoredPair:
    """One session's two answers, scored at pairing time (cosine comes later)."""

    version: int
    window_start: int
    teacher: str
    student: str
    exact: bool
    within: bool


def _score(teacher_half: dict[str, Any], shadow_half: dict[str, Any], window_start: int) -> ScoredPair:
    teacher, student = str(teacher_half["label"]), str(shadow_half["label"])
    return ScoredPair(version=int(shadow_half["v"]), window_start=window_start, teacher=teacher, student=student,
                      exact=normalise_for_match(teacher) == normalise_for_match(student),
                      within=bool(shadow_half["within"]))


def _offer(settings: Settings, client: redis.Redis, task: str, mine: PairField,
           halves: Sequence[tuple[str, dict[str, Any]]], now_s: float | None) -> list[ScoredPair]:
    """Put this worker's halves in (one script call), score the pairs they complete, count them."""
    if not halves:
        return []
    other = PairField.SHADOW if mine is PairField.TEACHER else PairField.TEACHER
    keys = [keyspace.agreement_pair(settings, task, content_hash) for content_hash, _ in halves]
    found = lua.script(client, "agreement_pair")(
        keys=keys, args=[str(mine), str(other), settings.agreement_pair_ttl_s,
                         *(orjson.dumps(half) for _, half in halves)])
    window = window_of(settings, now_s)
    scored = []
    for (_, half), raw in zip(halves, found, strict=True):
        if raw:
            theirs = orjson.loads(raw)
            teacher, shadow = (half, theirs) if mine is PairField.TEACHER else (theirs, half)
            scored.append(_score(teacher, shadow, window))
    if scored:
        _count(settings, client, task, scored, now_s)
    return scored


def offer_teacher(settings: Settings, client: redis.Redis, task: str, records: Iterable[LabelRecord],
                  now_s: float | None = None) -> list[ScoredPair]:
    """The teacher's labels of sampled sessions (a ``route=sample`` chunk, after its commit); the pairs
    they completed. A no-op when shadow labelling is off."""
    if not settings.shadow_enabled:
        return []
    halves = [(r.content_hash, {"label": r.label}) for r in records]
    return _offer(settings, client, task, PairField.TEACHER, halves, now_s)


def offer_shadow(settings: Settings, client: redis.Redis, task: str, records: Iterable[ShadowRecord],
                 now_s: float | None = None) -> list[ScoredPair]:
    """The serving student's shadow answers (a shadow chunk, after its records are written); the pairs
    they completed."""
    halves = [(r.content_hash, {"label": r.label, "v": r.adapter_version, "within": r.within_contract})
              for r in records]
    return _offer(settings, client, task, PairField.SHADOW, halves, now_s)


def _count(settings: Settings, client: redis.Redis, task: str, scored: Sequence[ScoredPair],
           now_s: float | None) -> None:
    """Add scored pairs to their windows' counts and queue them for the cosine (one round trip)."""
    kept_s = _kept_s(settings)
    now = time.time() if now_s is None else now_s
    index, backlog = keyspace.agreement_index(settings, task), keyspace.agreement_cosine(settings, task)
    with client.pipeline(transaction=True) as pipe:
        for pair in scored:
            key = keyspace.agreement_window(settings, task, pair.version, pair.window_start)
            pipe.hincrby(key, AgreementField.N, 1)
            pipe.hincrby(key, AgreementField.EXACT, int(pair.exact))
            pipe.hincrby(key, AgreementField.WITHIN, int(pair.within))
            pipe.expireat(key, pair.window_start + kept_s)
            pipe.zadd(index, {f"{pair.version}:{pair.window_start}": pair.window_start})
            pipe.lpush(backlog, orjson.dumps({"v": pair.version, "w": pair.window_start,
                                              "t": pair.teacher, "s": pair.student}))
        pipe.zremrangebyscore(index, "-inf", f"({int(now) - kept_s}")
        pipe.expire(index, kept_s)
        pipe.ltrim(backlog, 0, settings.agreement_cosine_backlog - 1)
        pipe.expire(backlog, kept_s)
        pipe.execute()


def pop_for_cosine(settings: Settings, client: redis.Redis, task: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` scored pairs waiting for their cosine, oldest first (taken off the list: a monitor
    that dies before :func:`add_cosines` loses them, which only thins the cosine's sample)."""
    raw: list[bytes] | None = client.rpop(keyspace.agreement_cosine(settings, task), limit)  # type: ignore[assignment]
    return [orjson.loads(r) for r in (raw or [])]


def add_cosines(settings: Settings, client: redis.Redis, task: str,
                cosines: Sequence[tuple[int, int, float]]) -> None:
    """Add ``(version, window start, cosine)`` to the windows' cosine sums (a window already expired is
    left alone)."""
    sums: dict[tuple[int, int], list[float]] = {}
    for version, window, cosine in cosines:
        sums.setdefault((version, window), []).append(cosine)
    kept_s = _kept_s(settings)
    now = time.time()
    with client.pipeline(transaction=True) as pipe:
        for (version, window), values in sums.items():
            if window + kept_s <= now:
                continue
            key = keyspace.agreement_window(settings, task, version, window)
            pipe.hincrbyfloat(key, AgreementField.COSINE_SUM, sum(values))
            pipe.hincrby(key, AgreementField.COSINE_N, len(values))
            pipe.expireat(key, window + kept_s)
        pipe.execute()


def _figures(task: str, version: int, window: int, raw: dict[bytes, bytes]) -> WindowFigures:
    def num(name: AgreementField) -> float:
        value = raw.get(name.encode())
        return float(value) if value is not None else 0.0

    return WindowFigures(task=task, version=version, window_start=window, n=int(num(AgreementField.N)),
                         exact=int(num(AgreementField.EXACT)), within=int(num(AgreementField.WITHIN)),
                         cosine_sum=num(AgreementField.COSINE_SUM), cosine_n=int(num(AgreementField.COSINE_N)))


def read_agreement(settings: Settings, client: redis.Redis, task: str) -> list[WindowFigures]:
    """Every kept window of ``task``, per adapter version, oldest window first (two round trips; at most
    ``agreement_keep_windows`` windows per version served in that time). ``WindowFigures`` has the counts
    and the rates (``exact_rate``, ``within_rate``, ``cosine``: None before any pair), ``to_dict()``."""
    members: list[bytes] = client.zrangebyscore(  # type: ignore[assignment]
        keyspace.agreement_index(settings, task), int(time.time()) - _kept_s(settings), "+inf")
    slots = []
    for member in members:
        version, window = (int(p) for p in member.decode().split(":"))
        slots.append((version, window))
    if not slots:
        return []
    with client.pipeline(transaction=False) as pipe:
        for version, window in slots:
            pipe.hgetall(keyspace.agreement_window(settings, task, version, window))
        replies = pipe.execute()
    rows = [_figures(task, version, window, raw) for (version, window), raw in zip(slots, replies, strict=True)
            if raw]
    return sorted(rows, key=lambda f: (f.window_start, f.version))


@dataclass(frozen=True, slots=True)
class QualityState:
    """A task's live quality as the monitor last judged it (``agreement:<task>:state``)."""

    version: int | None  # the serving version judged
    window: dict[str, Any] | None  # its judged window (WindowFigures.to_dict()), None before any pair
    degraded: bool = False
    reasons: list[str] = field(default_factory=list)
    rolled_back: dict[str, Any] | None = None  # the last rollback: {from, to, at, z, p, ...}
    checked_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def status(self) -> QualityStatus:
        """What ``labelq status`` shows of it."""
        w = self.window or {}
        return QualityStatus(version=self.version, window_start=w.get("window_start"), n=int(w.get("n") or 0),
                             exact=w.get("exact_rate"), cosine=w.get("cosine"), within=w.get("within_rate"),
                             degraded=self.degraded, reasons=list(self.reasons), rolled_back=self.rolled_back,
                             checked_at=self.checked_at)

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> QualityState | None:
        if not raw:
            return None
        try:
            data = orjson.loads(raw)
            return cls(version=data.get("version"), window=data.get("window"), degraded=bool(data.get("degraded")),
                       reasons=list(data.get("reasons") or []), rolled_back=data.get("rolled_back"),
                       checked_at=float(data.get("checked_at") or 0.0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return None  # written by another version of labelq: shown as unknown, rewritten at the next check


def write_state(settings: Settings, client: redis.Redis, task: str, state: QualityState) -> None:
    client.set(keyspace.agreement_state(settings, task), orjson.dumps(state.to_dict()),
               ex=2 * settings.agreement_window_s)


def read_states(settings: Settings, client: redis.Redis, tasks: Sequence[str]) -> dict[str, QualityState]:
    """The monitor's last verdict for each of ``tasks`` that has one (one round trip)."""
    if not tasks:
        return {}
    raws = client.mget([keyspace.agreement_state(settings, task) for task in tasks])
    found = {task: QualityState.from_json(raw) for task, raw in zip(tasks, raws, strict=True)}
    return {task: state for task, state in found.items() if state is not None}
