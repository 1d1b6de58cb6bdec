"""The agreement monitor: cosine for the scored pairs, the drift alarm and the automatic rollback.

It runs in the trainer's polling loop (``trainer.tasks.run_once``), where the
sentence embedder already lives, once per poll and task:

1. **cosine**: pairs scored by the workers (``labelq.agreement``) wait on a
   bounded list; up to ``COSINE_PAIRS_PER_POLL`` are embedded in batches and
   their cosines added to their windows;
2. **judge**: the serving version's window is its current one when that has
   ``drift_min_samples`` pairs, else its previous one (a window just begun is
   not judged on a handful of pairs); below a floor (``labelq.drift``) the
   task is *degraded*: ``quality_degraded`` is logged with the figures when
   the mark appears (``quality_recovered`` when it goes), and the mark stays
   in the task's quality state for status and metrics;
3. **rollback** (``auto_rollback``; never while a version is pinned: an
   operator chose it): when the promoted version's judged window is
   significantly worse in exact agreement than its predecessor's last window
   with enough pairs (``labelq.drift.worse_than``: one-sided two-proportion
   z-test, p < ``rollback_p_value``), the registry pointer goes back to the
   predecessor (students hot-swap at their next chunk), ``adapter_rolled_back``
   is logged, ``adapters/<task>/v<N>/rolled_back.json`` records why, and the
   next curated bucket is made due now (``labelq.curation_schedule.force_next``).
   A version is rolled back at most once (a ``SET NX`` marker), however many
   trainers poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis

from labelq import keyspace
from labelq.agreement import (
    QualityState,
    add_cosines,
    pop_for_cosine,
    read_agreement,
    read_states,
    write_state,
)
from labelq.curation_schedule import force_next
from labelq.drift import Floors, WindowFigures, degraded_reasons, worse_than
from labelq.logging import get_logger
from labelq.registry import Registry
from labelq.schemas import utc_now_iso
from labelq.settings import Settings
from labelq.store import ObjectStore
from labelq.task_registry import known_tasks

log = get_logger(__name__)
COSINE_BATCH = 256  # pairs embedded per encode call
COSINE_PAIRS_PER_POLL = 4_096  # at most this many per task and poll: the trainer has buckets to train too
Embed = Callable[[Sequence[str], Sequence[str]], list[float]]


def embedding_cosines(teacher: Sequence[str], student: Sequence[str]) -> list[float]:
    """Cosine of each (teacher, student) pair with the evaluation's sentence embedder."""
    from trainer.evaluate import embedder

    model = embedder()
    emb_t = model.encode(list(teacher), normalize_embeddings=True, convert_to_numpy=True)
    emb_s = model.encode(list(student), normalize_embeddings=True, convert_to_numpy=True)
    return [float(c) for c in (emb_t * emb_s).sum(axis=1)]


def embed_pending(settings: Settings, client: redis.Redis, task: str, embed: Embed = embedding_cosines) -> int:
    """Embed the pairs waiting for their cosine (at most ``COSINE_PAIRS_PER_POLL``); how many."""
    done = 0
    while done < COSINE_PAIRS_PER_POLL:
        pairs = pop_for_cosine(settings, client, task, COSINE_BATCH)
        if not pairs:
            break
        cosines = embed([p["t"] for p in pairs], [p["s"] for p in pairs])
        add_cosines(settings, client, task, [(int(p["v"]), int(p["w"]), c)
                                             for p, c in zip(pairs, cosines, strict=True)])
        done += len(pairs)
    return done


def floors_of(settings: Settings) -> Floors:
    return Floors(min_samples=settings.drift_min_samples, exact=settings.drift_floor_exact,
                  cosine=settings.drift_floor_cosine, within=settings.drift_floor_within)


def judged_window(settings: Settings, rows: Sequence[WindowFigures], version: int,
                  now_s: float) -> WindowFigures | None:
    """The version's window to judge: the current one with enough pairs, else the previous one with
    enough, else the current one (shown, too small to judge); None before any pair this or last window."""
    current = int(now_s // settings.agreement_window_s * settings.agreement_window_s)
    mine = {r.window_start: r for r in rows if r.version == version}
    candidates = [mine.get(current), mine.get(current - settings.agreement_window_s)]
    for row in candidates:
        if row is not None and row.n >= settings.drift_min_samples:
            return row
    return next((row for row in candidates if row is not None), None)


def last_full_window(settings: Settings, rows: Sequence[WindowFigures], version: int) -> WindowFigures | None:
    """The latest kept window of ``version`` with at least ``drift_min_samples`` pairs."""
    full = [r for r in rows if r.version == version and r.n >= settings.drift_min_samples]
    return full[-1] if full else None


def _rollback(settings: Settings, store: ObjectStore, client: redis.Redis, registry: Registry, task: str,
              version: int, predecessor: int, figures: dict[str, Any]) -> dict[str, Any] | None:
    """Roll ``version`` back to ``predecessor`` once; the record, or None when another trainer did, or
    the pointer moved meanwhile."""
    if not client.set(keyspace.agreement_rollback(settings, task, version), "1", nx=True,
                      ex=keyspace.CHUNK_DONE_TTL_S):
        return None
    state = registry.state(task)
    if state["pinned"] is not None or state["current"] != version or state["history"][-2:] != [predecessor, version]:
        log.warning("rollback_skipped", task=task, adapter_version=version, detail="the pointer moved meanwhile")
        return None
    restored = registry.rollback(task)
    record = {"task": task, "from": version, "to": restored, "at": utc_now_iso(), **figures}
    store.put_bytes(keyspace.adapter_rolled_back(task, version), orjson.dumps(record, option=orjson.OPT_INDENT_2))
    force_next(settings, client, task, f"v{version} rolled back")
    log.error("adapter_rolled_back", **record)
    return record


def judge(settings: Settings, store: ObjectStore, client: redis.Redis, task: str,
          previous: QualityState | None, now_s: float) -> QualityState | None:
    """The task's quality now (drift mark, maybe a rollback); None when no adapter serves it."""
    registry = Registry(settings, client, store)
    pointer = registry.state(task)
    serving = pointer["pinned"] or pointer["current"]
    if serving is None:
        return None
    rows = read_agreement(settings, client, task)
    window = judged_window(settings, rows, serving, now_s)
    reasons = degraded_reasons(window, floors_of(settings)) if window is not None else []
    figures = window.to_dict() if window is not None else None
    was_degraded = previous is not None and previous.degraded and previous.version == serving
    if reasons and not was_degraded:
        log.warning("quality_degraded", task=task, adapter_version=serving, reasons=reasons, window=figures)
    elif was_degraded and not reasons and window is not None and window.n >= settings.drift_min_samples:
        log.info("quality_recovered", task=task, adapter_version=serving, window=figures)
    elif was_degraded and not reasons:
        reasons = list(previous.reasons if previous else [])  # too few pairs yet to clear the mark
    rolled_back = previous.rolled_back if previous is not None else None
    history = pointer["history"]
    if (settings.auto_rollback and window is not None and pointer["pinned"] is None and len(history) >= 2
            and history[-1] == serving):
        predecessor = history[-2]
        before = last_full_window(settings, rows, predecessor)
        verdict = None if before is None else worse_than(
            window, before, min_samples=settings.drift_min_samples, p_value=settings.rollback_p_value)
        if verdict is not None and verdict.worse:
            record = _rollback(settings, store, client, registry, task, serving, predecessor, verdict.to_dict())
            if record is not None:
                rolled_back = record
                return QualityState(version=record["to"], window=None, degraded=False, reasons=[],
                                    rolled_back=rolled_back, checked_at=now_s)
    return QualityState(version=serving, window=figures, degraded=bool(reasons), reasons=reasons,
                        rolled_back=rolled_back, checked_at=now_s)


def monitor_quality(settings: Settings, store: ObjectStore, client: redis.Redis, *, embed: Embed = embedding_cosines,
                    now_s: float | None = None) -> dict[str, QualityState]:
    """One pass over every task: cosines, then the verdict (written for status and metrics)."""
    now = time.time() if now_s is None else now_s
    tasks = known_tasks(settings, client)
    previous = read_states(settings, client, tasks)
    states = {}
    for task in tasks:
        embed_pending(settings, client, task, embed)
        state = judge(settings, store, client, task, previous.get(task), now)
        if state is not None:
            write_state(settings, client, task, state)
            states[task] = state
    return states
