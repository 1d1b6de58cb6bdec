"""Labelling one chunk with the student: adapter lookup, one engine call, confidence, escalation.

Before every chunk the worker reads which adapter version serves the task (one
Redis read); a new version is fetched to the local cache and served under a
new LoRA id, so a promote, pin or rollback reaches a running worker at its next
chunk. A chunk of a task with no version yet is parked off the queue
(``labelq.queue.parking``) until one is promoted, unless
``LABELQ_STUDENT_ALLOW_BASE_MODEL`` lets the bare base model label it. Answers below the confidence threshold go back to the teacher
(``route=escalation``) within a bounded share of traffic while the teacher can
take them; otherwise they are kept with a ``low_confidence`` flag. An answer
that breaks the output contract always goes back to the teacher, paused or
not: the session is fine, the student failed, and it waits for the teacher
rather than being dead-lettered (no label outside the contract is ever
written; only a chunk that is itself an escalation dead-letters a breach).
An engine that died (``EngineDead``) is dropped: its chunk goes back to the
queue and the next chunk starts a new engine.

An adapter is served only on the base it was trained on: one that recorded
another base hash (``labelq.models``) is refused and its chunks wait
(``Paused``, nothing dead-lettered) until an operator sets
``LABELQ_STUDENT_MODEL`` to its base or promotes/pins one trained on this
base. Adapters trained before bases were recorded are served, with one
``adapter_base_unknown`` warning per version; so are all adapters when the
engine's base cannot be hashed here (an ``openai`` engine serving a path on its
own machine), with one ``base_unverifiable`` warning. A base model that cannot
be resolved (``tiny`` not built) makes chunks wait the same way.

The confidence threshold is the adapter's own when the trainer calibrated it on
its val split (``calibration.threshold`` in the version's ``metrics.json``, read
once per version: a version is written once), else
``LABELQ_STUDENT_CONFIDENCE_THRESHOLD`` (the bare base model, adapters trained
before calibration, and adapters whose calibration did not reach the target).

Every adapter copy is checked against the content hash the registry records
for its version (``workers.student.cache``); when the store's copy itself does
not match, chunks wait the same way until an operator pins or promotes
another version.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from labelq.contract import Verdict, check, decoding_schema
from labelq.engines import Adapter, Generation, StudentBackend, make_backend
from labelq.errors import (
    ConfigError,
    EngineDead,
    IntegrityError,
    ObjectNotFound,
    ServiceUnavailable,
)
from labelq.keyspace import Stat
from labelq.logging import get_logger
from labelq.models import mismatch_message, same_base, settings_base_hash
from labelq.outcomes import ChunkOutcome, StudentEngine
from labelq.prompts import student_prompt
from labelq.queue.task import Paused
from labelq.records import commit_chunk
from labelq.registry import Registry
from labelq.schemas import ChunkMessage, DeadLetter, LabelRecord, SessionItem
from labelq.settings import Settings
from labelq.spec import TaskSpec, load_spec
from labelq.store import ObjectStore
from workers.student import escalation
from workers.student.cache import AdapterCache

log = get_logger(__name__)
ENSURE_EVERY_S = 30.0  # how often a student without an adapter looks for a lost registry in the store
Escalate = Callable[[ChunkMessage, Sequence[SessionItem]], None]


@dataclass
class StudentRuntime:
    """What a student worker process keeps between chunks: the engine (made lazily) and the adapter cache."""

    settings: Settings
    store: ObjectStore
    client: redis.Redis
    backend_factory: Callable[[Settings], StudentBackend] = make_backend
    _backend: StudentBackend | None = field(default=None, init=False)
    _cache: AdapterCache | None = field(default=None, init=False)
    _base_hash: str | None = field(default=None, init=False)
    _unchecked_warned: set[tuple[str, int]] = field(default_factory=set, init=False)
    _content_hashes: dict[tuple[str, int], str | None] = field(default_factory=dict, init=False)
    _thresholds: dict[tuple[str, int], float | None] = field(default_factory=dict, init=False)
    _ensured: dict[str, float] = field(default_factory=dict, init=False)  # task -> last registry check

    @property
    def backend(self) -> StudentBackend:
        if self._backend is None:
            try:
                self._backend = self.backend_factory(self.settings)
            except ConfigError as exc:  # e.g. `tiny` not built: the operator must act; chunks wait
                raise Paused(str(exc), self.settings.student_wait_s, on="configuration") from None
            except Exception as exc:  # an engine that will not start (out of memory, say): an outage
                raise ServiceUnavailable(f"the student engine will not start: {type(exc).__name__}: "
                                         f"{str(exc)[:200]}", dependency="engine") from exc
        return self._backend

    @property
    def base_hash(self) -> str:
        """The hash of the base the engine serves (computed once, when an adapter needs checking);
        empty when the engine is remote and its base is a path this machine does not have."""
        if self._base_hash is None:
            try:
                self._base_hash = settings_base_hash(self.settings, self.backend.model)
            except ConfigError as exc:
                log.warning("base_unverifiable", model=self.backend.model, detail=str(exc))
                self._base_hash = ""
        return self._base_hash

    @property
    def cache(self) -> AdapterCache:
        if self._cache is None:
            root = self.settings.student_adapter_cache_dir or Path(self.settings.state_dir) / "adapter-cache"
            self._cache = AdapterCache(self.store, root, keep=self.settings.student_adapters_kept)
        return self._cache

    def generate(self, spec: TaskSpec, chunk: ChunkMessage, adapter: Adapter | None) -> tuple[list[Generation], float]:
        """One engine call for the chunk's prompts (under the spec's JSON schema, when it has one); the
        generations and the engine's seconds. A dead engine is dropped (the next call starts a new one)
        and EngineDead raised: the chunk goes back to the queue."""
        prompts = [student_prompt(spec, self.settings, s.require_payload()) for s in chunk.sessions]
        started = time.monotonic()
        try:
            schema = spec.contract.json_schema
            gens = self.backend.generate(prompts, adapter, spec.student.max_new_tokens, None if schema is None
                                         else decoding_schema(schema, spec.student.max_new_tokens))
        except EngineDead:
            self.drop_backend()
            raise
        return gens, time.monotonic() - started

    def drop_backend(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            with contextlib.suppress(Exception):  # it is dead already
                backend.close()
            log.error("engine_dropped", backend=backend.name)

    def adapter_for(self, task: str) -> Adapter | None:
        registry = Registry(self.settings, self.client, self.store)
        version = registry.serving(task)
        if version is None and time.monotonic() - self._ensured.get(task, -ENSURE_EVERY_S) >= ENSURE_EVERY_S:
            self._ensured[task] = time.monotonic()  # Redis may have lost the pointer: the store's mirror has it
            if registry.ensure(task):
                version = registry.serving(task)
        if version is None:
            if not self.settings.student_allow_base_model:
                # Parked off the queue until a version is promoted: KEDA does not start GPUs for it.
                raise Paused(f"task {task!r} has no promoted adapter yet (set LABELQ_STUDENT_ALLOW_BASE_MODEL=true "
                             "to label with the bare base model)", self.settings.student_wait_s,
                             park_until_any=registry.serving_keys(task))
            return None
        self.check_base(task, version)
        try:
            return self.cache.get(task, version, self.content_hash(registry, task, version))
        except ObjectNotFound as exc:  # the registry names a version whose files are not in the store
            raise Paused(f"adapter v{version} of task {task!r} is missing from the store ({exc}); pin or promote "
                         "another version (`labelq adapter pin|rollback`)", self.settings.student_wait_s,
                         on="configuration") from None
        except IntegrityError as exc:  # the store's copy itself is wrong: chunks wait for an operator
            raise Paused(f"adapter v{version} of task {task!r} does not match the content hash the registry "
                         f"records ({exc}); pin or promote another version (`labelq adapter pin|rollback`)",
                         self.settings.student_wait_s) from None

    def content_hash(self, registry: Registry, task: str, version: int) -> str | None:
        """The registry's content hash of a version, read once (a version is written once); None for a
        version written before hashes were kept, served unchecked with one warning."""
        if (task, version) not in self._content_hashes:
            found = self._content_hashes[(task, version)] = registry.content_hash(task, version)
            if found is None:
                log.warning("adapter_unverified", task=task, adapter_version=version,
                            detail="adapter written before content hashes were kept: served unchecked")
        return self._content_hashes[(task, version)]

    def confidence_threshold(self, adapter: Adapter | None) -> float:
        """The threshold below which ``adapter``'s answers are doubtful: its calibrated one, else the setting."""
        if adapter is None:
            return self.settings.student_confidence_threshold
        key = (adapter.task, adapter.version)
        if key not in self._thresholds:
            try:
                metrics = Registry(self.settings, self.client, self.store).metrics(*key)
            except (ObjectNotFound, orjson.JSONDecodeError) as exc:
                log.warning("adapter_metrics_unreadable", task=adapter.task, adapter_version=adapter.version,
                            detail=str(exc)[:200])
                metrics = {}
            found = self._thresholds[key] = calibrated_threshold(metrics)
            log.info("confidence_threshold", task=adapter.task, adapter_version=adapter.version,
                     threshold=found if found is not None else self.settings.student_confidence_threshold,
                     calibrated=found is not None)
        recorded = self._thresholds[key]
        return self.settings.student_confidence_threshold if recorded is None else recorded

    def check_base(self, task: str, version: int) -> None:
        """Paused when the adapter was trained on another base than the engine serves."""
        recorded = self.cache.base_hash(task, version)
        if recorded is None:
            if (task, version) not in self._unchecked_warned:
                self._unchecked_warned.add((task, version))
                log.warning("adapter_base_unknown", task=task, adapter_version=version,
                            detail="adapter trained before bases were recorded: served without a base check")
            return
        if self.base_hash and not same_base(recorded, self.base_hash):
            raise Paused(mismatch_message(task, version, recorded, self.base_hash, self.backend.model),
                         self.settings.student_wait_s)


def calibrated_threshold(metrics: Any) -> float | None:
    """The confidence threshold a version's ``metrics.json`` records when its calibration succeeded, else None."""
    calibration = metrics.get("calibration") if isinstance(metrics, dict) else None
    if not isinstance(calibration, dict) or calibration.get("calibrated") is not True:
        return None
    threshold = calibration.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        return None
    return float(threshold)


def _escalation_order(verdicts: Sequence[Verdict], gens: Sequence[Generation], threshold: float,
                      items: Sequence[SessionItem]) -> list[int]:
    """Indexes of doubtful answers, worst first: contract breaches, then lowest confidence."""
    doubtful = []
    for i, (verdict, gen) in enumerate(zip(verdicts, gens, strict=True)):
        ok = verdict.ok
        confidence = gen.confidence if gen.confidence is not None else 1.0
        if not ok or confidence < threshold:
            doubtful.append((ok, confidence, items[i].content_hash, i))
    return [i for *_, i in sorted(doubtful)]


_LOOK_UP: Any = object()  # run_student_chunk's default: look the adapter up (None means the bare base)


def run_student_chunk(runtime: StudentRuntime, chunk: ChunkMessage, escalate: Escalate,
                      adapter: Adapter | None = _LOOK_UP) -> ChunkOutcome:
    """Label a chunk, escalate what the bound allows, commit the output once; ``adapter``: the one the
    worker's ready check already found (``runtime.adapter_for``), else it is looked up here."""
    settings = runtime.settings
    spec = load_spec(chunk.task, settings.specs_dir)
    if adapter is _LOOK_UP:
        adapter = runtime.adapter_for(chunk.task)
    threshold = runtime.confidence_threshold(adapter)  # read before the engine runs: a store outage costs nothing
    gens, engine_s = runtime.generate(spec, chunk, adapter)

    verdicts = [check(gen.text, spec.contract) for gen in gens]
    doubtful = _escalation_order(verdicts, gens, threshold, chunk.sessions)
    allowed = 0
    if doubtful and chunk.route != "escalation" and escalation.teacher_can_take(settings, runtime.client, spec):
        allowed = escalation.grant(settings, runtime.client, chunk.task, chunk.chunk_id,
                                   sessions=len(chunk.sessions), candidates=len(doubtful),
                                   share=settings.student_escalation_share)
    escalated = set(doubtful[:allowed])
    if chunk.route != "escalation":
        # A broken answer is the student's failure, not the session's: it waits for the teacher
        # (beyond the share, and while the teacher is paused) instead of being dead-lettered.
        escalated |= {i for i, verdict in enumerate(verdicts) if not verdict.ok}
    if escalated:
        escalate(chunk, [chunk.sessions[i] for i in sorted(escalated)])

    records, letters = [], []
    per_session_ms = engine_s * 1000 / max(1, len(gens))
    for i, (item, gen, verdict) in enumerate(zip(chunk.sessions, gens, verdicts, strict=True)):
        if i in escalated:
            continue
        if not verdict.ok:
            letters.append(DeadLetter(reason=f"student_{verdict.reason}", stage="student", task=chunk.task,
                                      session_id=item.session_id, content_hash=item.content_hash,
                                      chunk_id=chunk.chunk_id, payload=item.require_payload(),
                                      detail="student answer broke the output contract on a chunk the teacher "
                                             "sent back (no second escalation)"))
            continue
        low = gen.confidence is not None and gen.confidence < threshold
        records.append(LabelRecord(
            session_id=item.session_id, content_hash=item.content_hash, task=chunk.task, label=verdict.label,
            source="student", model=runtime.backend.model, adapter_version=adapter.version if adapter else None,
            prompt_version=spec.prompt_version,
            confidence=None if gen.confidence is None else round(gen.confidence, 4),
            words=verdict.words, output_tokens=gen.tokens, latency_ms=round(per_session_ms, 2),
            chunk_id=chunk.chunk_id, flags=(["low_confidence"] if low else []) + ([] if adapter else ["base_model"])
            + ([] if chunk.route == "steady" else [f"route:{chunk.route}"]),
        ))
    commit_chunk(settings, runtime.store, runtime.client, stage="student", task=chunk.task, chunk_id=chunk.chunk_id,
                 records=records, dead_letters=letters,
                 extra_counts={Stat.ESCALATED_STUDENT: len(escalated), Stat.STUDENT_ENGINE_MS: int(engine_s * 1000)})
    return ChunkOutcome(labelled=len(records), escalated=len(escalated), dead_lettered=len(letters),
                        student=StudentEngine(adapter_version=adapter.version if adapter else None,
                                              engine_s=round(engine_s, 3), backend=runtime.backend.name,
                                              student_usd=round(engine_s / 3600 * settings.student_gpu_usd_per_hour,
                                                                8)))
