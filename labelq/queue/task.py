"""What every labelq task shares, written once: base Celery task classes and their registration.

Stage packages define a task with :func:`register_chunk_task` (a chunk on the
teacher or student queue) or :func:`register_task` (a trigger message), so
they never import Celery themselves. A chunk task (:class:`ChunkTask`) has:

* logging context (Celery task id, chunk id, task spec) bound for the whole run;
* the message decoded against its schema; undecodable messages are
  dead-lettered with the reason and acknowledged (never retried forever);
* claim-checked payloads read from the object store (``labelq.payloads``):
  the store down is an outage (below); a payload missing or not the
  session's dead-letters that session (``payload_missing``,
  ``payload_corrupt``) and the rest of the chunk is labelled;
* a delivery counter per chunk: a chunk that has been delivered more than
  ``max_attempts`` times (it keeps killing its worker) is split in two halves
  that go back to the queue as new chunks, so the sessions that share a chunk
  with a poisonous one are still labelled; a single session that keeps failing
  is dead-lettered as ``poison_chunk``. The rest of the queue flows meanwhile;
* ``Paused``: the worker cannot work now (budget spent, key refused): it
  waits, puts the message back and loses nothing; a chunk that waits for
  something another process creates (a student task's first adapter) is
  parked off its queue instead (``labelq.queue.parking``);
* every other failure goes through the error policy (``policy.py``): an
  outage (Redis down or at its maxmemory, the store, the provider, the engine) or a configuration
  error waits and puts the message back, uncounted; anything else is a
  failed delivery, and the delivery counter turns a chunk that keeps
  failing into halves, then dead letters;
* the message is acknowledged only after the chunk's outcome is written;
* a shadow chunk (``route=shadow``: sessions of the teacher sample, labelled by
  the student for agreement only, ``labelq.agreement``) never dead-letters: the
  teacher's copy of each session answers for it, so a shadow chunk that keeps
  failing, or whose payloads are gone, is dropped with a log line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import orjson
import redis
from celery import Celery, Task
from celery.exceptions import Reject

from labelq import keyspace
from labelq.deadletter import truncate_raw
from labelq.errors import DecodeError
from labelq.logging import bind, get_logger
from labelq.metrics import observe_chunk, observe_retry, observe_waiting
from labelq.outcomes import ChunkOutcome
from labelq.payloads import letters_chunk_id, read_payload, resolve_chunk
from labelq.queue.parking import Parked, park
from labelq.queue.policy import (
    Failure,
    Verdict,
    classify,
    clear_waiting,
    explain,
    note_waiting,
    outage_backoff_s,
)
from labelq.queue.publish import republish, trigger_curation_if_due
from labelq.records import commit_chunk
from labelq.redis_memory import refused_for_memory, release_reserve
from labelq.redis_server import connect
from labelq.schemas import SHADOW_ROUTE, ChunkMessage, DeadLetter, SessionItem
from labelq.settings import Settings
from labelq.store import ObjectStore, open_store

log = get_logger(__name__)


class Paused(Exception):
    """Work cannot proceed now; the message goes back to its queue after ``wait_s``.

    ``on`` names what the stage waits on when that is an outage or configuration
    (``provider``, ``configuration``; shown by status like any other wait), "" otherwise.
    ``park_until_any``: Redis keys any one of which means the chunk can be served (a task's
    adapter pointers). When given, the chunk is parked instead (``labelq.queue.parking``): it
    leaves its queue, so the queue's length (what KEDA scales on) counts only work that can be done,
    and whoever creates one of those keys moves it back.
    """

    def __init__(self, reason: str, wait_s: float, *, on: str = "", park_until_any: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait_s = wait_s
        self.on = on
        self.park_until_any = tuple(park_until_any)


class LabelqTask(Task):  # type: ignore[misc]
    """Base class of every labelq task: the settings, Redis and store of the app it runs in."""

    abstract = True
    acks_late = True

    @cached_property
    def settings(self) -> Settings:
        settings: Settings = self.app.conf.labelq_settings
        return settings

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings)

    @cached_property
    def store(self) -> ObjectStore:
        return open_store(self.settings)

    @property
    def message_id(self) -> str | None:
        """The id of the message being run (Celery's task id)."""
        return self.request.id  # type: ignore[no-any-return]

    def trigger_curation_if_due(self, task: str) -> bool:
        """Send one trainer trigger when ``task`` crossed its next curation threshold."""
        return trigger_curation_if_due(self.settings, self.redis, self.app, task)


class ChunkTask(LabelqTask):
    """Base class of the teacher and student chunk tasks."""

    abstract = True
    stage = "worker"
    reject_on_worker_lost = True
    # The stage's check that a chunk can run now (``register_chunk_task``'s ``ready``); None: always.
    ready: Callable[[ChunkTask, ChunkMessage], None] | None = None

    def republish(self, queue: str, source: ChunkMessage, items: Sequence[SessionItem],
                  route: str | None = None) -> None:
        """Put ``items`` of ``source`` on ``queue`` as new chunks (hand-back, escalation, bisection)."""
        republish(self.settings, self.app, self.redis, queue, source, items, route)

    def __call__(self, message: Any) -> Any:
        """Run one chunk under the error policy (``labelq.queue.policy``).

        The message is acknowledged only when this returns, that is after the
        chunk's outcome (label records, dead letters, or the halves it was split
        into) is written; every failure raises ``Reject(requeue=True)``.
        """
        with bind(celery_task_id=self.request.id, stage=self.stage):
            try:
                return self._run(message)
            except Reject:
                raise
            except Exception as exc:  # bookkeeping failed (Redis or the store down): never ack unrecorded work
                self._wait_out(classify(exc), exc, counted_key=None)
                raise Reject(f"{type(exc).__name__}: {str(exc)[:200]}", requeue=True) from None

    def _run(self, message: Any) -> Any:
        try:
            chunk = ChunkMessage.decode(message)
        except DecodeError as exc:
            self._dead_letter_message(message, exc)
            return ChunkOutcome(status="decode_error").as_log()
        with bind(chunk_id=chunk.chunk_id, task=chunk.task):
            attempts_key = keyspace.chunk_attempts(self.settings, self.stage, chunk.chunk_id)
            with self.redis.pipeline() as pipe:  # MULTI: the counter never lives without its TTL
                pipe.incr(attempts_key)
                pipe.expire(attempts_key, keyspace.CHUNK_ATTEMPTS_TTL_S)
                deliveries = int(pipe.execute()[0])
            if deliveries > self.settings.max_attempts:
                return self._poisoned(chunk, deliveries).as_log()
            started = time.monotonic()
            try:
                outcome = self._resolve_and_run(chunk)
            except Paused as pause:
                self.redis.decr(attempts_key)  # a pause is not a failed delivery
                if pause.park_until_any:
                    parked = self._park(chunk, pause)
                    if parked is Parked.PARKED:
                        return ChunkOutcome(status="parked").as_log()
                    if parked is Parked.SERVABLE:  # it can be served now: straight back, no wait
                        raise Reject("servable again", requeue=True) from None
                observe_retry(self.stage, "paused")
                if pause.on:
                    self._note_wait(Verdict(Failure.CONFIG if pause.on == "configuration" else Failure.OUTAGE,
                                            pause.on), pause.reason)
                log.warning("paused", reason=pause.reason, wait_s=pause.wait_s)
                time.sleep(pause.wait_s)
                raise Reject(pause.reason, requeue=True) from None
            except Exception as exc:  # never lose a chunk: put it back
                verdict = classify(exc)
                if verdict.kind is not Failure.POISON:
                    self._wait_out(verdict, exc, counted_key=attempts_key)
                    raise Reject(f"{verdict.on}: {type(exc).__name__}", requeue=True) from None
                # Poison: a failed delivery; after max_attempts the chunk is halved (_poisoned).
                observe_retry(self.stage, "failed")
                log.exception("chunk_failed", deliveries=deliveries, error=type(exc).__name__)
                time.sleep(min(30.0, 0.5 * 2 ** deliveries))
                raise Reject(f"{type(exc).__name__}: {str(exc)[:200]}", requeue=True) from None
            self.redis.delete(attempts_key)
            if self._waiting_on:
                clear_waiting(self.settings, self.redis, self.stage)
                observe_waiting(self.stage, self._waiting_on, 0)
                self._outage_streak, self._waiting_on = 0, ""
            elapsed = time.monotonic() - started
            observe_chunk(self.stage, chunk.task, len(chunk.sessions), elapsed, outcome)
            fields = outcome.as_log()
            log.info("chunk_done", sessions=len(chunk.sessions), elapsed_s=round(elapsed, 3), **fields)
            return fields  # JSON-able; Celery ignores task results

    def _park(self, chunk: ChunkMessage, pause: Paused) -> Parked:
        """Park the message being run (``labelq.queue.parking``); NOT_HELD when kombu does not hold it
        as unacknowledged (then the caller waits and puts it back, as for any pause)."""
        tag = (self.request.properties or {}).get("delivery_tag")
        if not tag:
            return Parked.NOT_HELD
        parked = park(self.settings, self.redis, self.stage, chunk.task, str(tag), pause.park_until_any)
        if parked is Parked.PARKED:
            observe_retry(self.stage, "parked")
            log.info("chunk_parked", reason=pause.reason, sessions=len(chunk.sessions))
        return parked

    def _resolve_and_run(self, chunk: ChunkMessage) -> ChunkOutcome:
        """Ask the stage whether the chunk can run now (``ready``: a student chunk whose task has no adapter
        is paused or parked here, before anything is read or written), then resolve its claim-checked
        payloads (the store down: raised, an outage), dead-letter the sessions whose payload is gone, and
        run the rest. Letters are never committed for a chunk that then goes back or is parked: its message
        would still carry them, in flight for the audit and dead-lettered at once."""
        if self.ready is not None:
            self.ready(self, chunk)
        resolved, letters = resolve_chunk(self.store, chunk, self.stage)
        if letters and chunk.route == SHADOW_ROUTE:  # the teacher's copy dead-letters them, once
            log.warning("shadow_payload_unresolved", sessions=len(letters))
            letters = []
        if letters:
            commit_chunk(self.settings, self.store, self.redis, stage=self.stage, task=chunk.task,
                         chunk_id=letters_chunk_id(chunk, letters), records=[], dead_letters=letters)
            log.error("payload_unresolved", sessions=len(letters), reasons=sorted({d.reason for d in letters}),
                      first=letters[0].detail)
        if resolved is None:
            return ChunkOutcome(status="payload_missing", dead_lettered=len(letters))
        outcome: ChunkOutcome = super().__call__(resolved)
        return dataclasses.replace(outcome, dead_lettered=outcome.dead_lettered + len(letters)) if letters else outcome

    def _note_wait(self, verdict: Verdict, detail: str) -> None:
        note_waiting(self.settings, self.redis, self.stage, verdict, detail)
        if verdict.on != self._waiting_on:
            self._waiting_on = verdict.on
            observe_waiting(self.stage, verdict.on, time.time())

    _outage_streak = 0  # outages in a row met by this worker process
    _waiting_on = ""  # what this worker process waits on ("" while it works)

    def _wait_out(self, verdict: Verdict, exc: Exception, counted_key: str | None) -> None:
        """An outage or a configuration error: not a failed delivery. Say what the stage waits on,
        wait (longer with each outage in a row) and let the caller put the chunk back."""
        if counted_key is not None:
            # Redis may be what is down: the counter expires, and a count too many only halves sooner.
            with contextlib.suppress(redis.RedisError):
                self.redis.decr(counted_key)
        if verdict.kind is Failure.POISON:  # bookkeeping raised something unexpected: count it as an outage
            verdict = Verdict(Failure.OUTAGE, "worker")
        if refused_for_memory(exc):  # Redis at its maxmemory: free the reserve, so the queues can drain
            with contextlib.suppress(redis.RedisError):
                release_reserve(self.redis, keyspace.memory_reserve(self.settings), "a chunk's write")
        self._outage_streak += 1
        wait_s = outage_backoff_s(self.settings, self._outage_streak)
        detail = explain(exc)
        self._note_wait(verdict, detail)
        observe_retry(self.stage, verdict.kind.value)
        if verdict.kind is Failure.CONFIG:
            log.error("configuration_error", error=detail, wait_s=wait_s)
        else:
            log.warning("waiting_on_outage", on=verdict.on, error=detail, wait_s=wait_s, streak=self._outage_streak)
        time.sleep(wait_s)

    def _poisoned(self, chunk: ChunkMessage, deliveries: int) -> ChunkOutcome:
        if chunk.route == SHADOW_ROUTE:  # its sessions are the teacher's to label or dead-letter
            log.error("shadow_chunk_dropped", deliveries=deliveries, sessions=len(chunk.sessions))
            return ChunkOutcome(status="shadow_dropped")
        if len(chunk.sessions) > 1:
            # Bisect: each half is a new chunk (its own id and delivery counter). Redelivered
            # after a crash here, the same halves are published again: same ids, same output.
            half = len(chunk.sessions) // 2
            for part in (chunk.sessions[:half], chunk.sessions[half:]):
                self.republish(self.stage, chunk, part)
            log.error("poison_chunk_split", deliveries=deliveries, sessions=len(chunk.sessions))
            return ChunkOutcome(status="poison_chunk_split", split_sessions=len(chunk.sessions))
        log.error("poison_chunk", deliveries=deliveries)
        # The letter keeps the session itself (a claim-checked one read back from the store), for redrive.
        letters = [DeadLetter(reason="poison_chunk", stage=self.stage, task=chunk.task,
                              session_id=s.session_id, content_hash=s.content_hash, chunk_id=chunk.chunk_id,
                              payload=read_payload(self.store, s),
                              detail=f"delivered {deliveries} times without completing, alone in its chunk"
                                     + ("" if s.payload_ref is None else f" (payload from {s.payload_ref})"))
                   for s in chunk.sessions]
        commit_chunk(self.settings, self.store, self.redis, stage=self.stage, task=chunk.task,
                     chunk_id=chunk.chunk_id, records=[], dead_letters=letters)
        return ChunkOutcome(status="poison_chunk", dead_lettered=len(letters))

    def _dead_letter_message(self, message: Any, exc: DecodeError) -> None:
        try:
            raw = orjson.dumps(message)
        except TypeError:
            raw = repr(message).encode()
        text, truncated = truncate_raw(raw, self.settings.dead_letter_raw_max_bytes)
        letter = DeadLetter(reason="decode_error", detail=str(exc)[:500], stage=self.stage,
                            raw=text, raw_truncated=truncated)
        message_id = str(self.request.id or "unknown")
        commit_chunk(self.settings, self.store, self.redis, stage=self.stage, task="_undecodable",
                     chunk_id=message_id, records=[], dead_letters=[letter])
        log.error("undecodable_message", reason=str(exc)[:200])


def register_chunk_task(app: Celery, name: str, stage: str,
                        run: Callable[[ChunkTask, ChunkMessage], ChunkOutcome],
                        ready: Callable[[ChunkTask, ChunkMessage], None] | None = None) -> None:
    """Define the chunk task ``name`` on ``app``: :class:`ChunkTask` decodes, counts deliveries and
    logs, calls ``ready(task, chunk)`` when given (it raises :class:`Paused` for a chunk that cannot run
    yet, before its payloads are read), then ``run(task, chunk)``."""

    @app.task(name=name, base=ChunkTask, bind=True, stage=stage, shared=False,  # type: ignore[untyped-decorator]
              ready=None if ready is None else staticmethod(ready))
    def chunk_task(self: ChunkTask, chunk: ChunkMessage) -> ChunkOutcome:
        return run(self, chunk)


def register_task(app: Celery, name: str, run: Callable[[LabelqTask, dict[str, Any]], Any]) -> None:
    """Define the task ``name`` on ``app`` that calls ``run(task, message)`` (acknowledged late)."""

    @app.task(name=name, base=LabelqTask, bind=True, shared=False)  # type: ignore[untyped-decorator]
    def plain_task(self: LabelqTask, message: dict[str, Any]) -> Any:
        return run(self, message)
