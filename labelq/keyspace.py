"""Every protocol string of labelq, defined once: Redis keys, hash field names, store paths.

Redis keys are ``<redis_key_prefix><part>:<part>...`` (the prefix isolates a
deployment or a test); each function below names one key family, says what it
holds and how long it lives. Kombu's own keys (queue lists, the ``unacked``
hash) take the same prefix without a separator, through kombu's
``global_keyprefix``. Hash field names are the ``StrEnum`` classes; the Lua
scripts in ``labelq/lua/`` name the same fields (a unit test checks they agree).

Object-store paths are built from :func:`labelq.store.keys.key` and
:func:`~labelq.store.keys.segment`, so a task name or chunk id from data can
never leave its folder::

    labels/<source>/<task>/<chunk>.jsonl          label records (teacher, student, human)
    inputs/<stage>/<task>/<chunk>.jsonl           the sessions a chunk labelled
    deadletter/<stage>/<task>/<name>.jsonl        dead letters (ingest, teacher, student)
    curated/<task>/<version>/{train,val}.jsonl    a curated bucket, manifest.json, then a marker
    adapters/<task>/v<N>/...                      an adapter version; adapters/<task>/registry.json
"""

from __future__ import annotations

from enum import StrEnum

from labelq.settings import Settings
from labelq.store.keys import key, segment


def _redis(settings: Settings, *parts: str) -> str:
    return settings.redis_key_prefix + ":".join(parts)


# --- Redis: hash field names ---------------------------------------------------------------


class Stat(StrEnum):
    """Fields of the ``stats:<task>`` hash: counters that move once per chunk or producer batch."""

    INGESTED = "ingested"
    DUPLICATES = "duplicates"
    LABELLED_TEACHER = "labelled_teacher"
    LABELLED_STUDENT = "labelled_student"
    DEAD_TEACHER = "dead_teacher"
    DEAD_STUDENT = "dead_student"
    ESCALATED_STUDENT = "escalated_student"
    STUDENT_ENGINE_MS = "student_engine_ms"


def labelled_stat(stage: str) -> str:
    """The ``stats`` field counting a worker stage's label records."""
    return f"labelled_{stage}"


def dead_stat(stage: str) -> str:
    """The ``stats`` field counting a worker stage's dead letters."""
    return f"dead_{stage}"


class RoutingField(StrEnum):
    """Fields of the ``routing:<task>`` hash (the seed phase; written by ``seed_route.lua``)."""

    SEEDED = "seeded"
    CONSIDERED = "considered"
    DONE = "done"


class BudgetField(StrEnum):
    """Fields of the ``budget:<task>`` hash, integer micro-dollars (``budget_*.lua``)."""

    SPENT = "spent"
    RESERVED = "reserved"


class EscalationField(StrEnum):
    """Fields of the ``escalation:<task>`` hash (``escalation_grant.lua``)."""

    SEEN = "seen"
    GRANTED = "granted"


class CurationField(StrEnum):
    """Fields of the ``curation:<task>`` hash."""

    LABELS_AT = "labels_at"  # teacher labels when the last automatic bucket was built


class LedgerMetric(StrEnum):
    """Per-model metrics of the ``ledger:<task>`` hash; the field is ``<model>|<metric>``."""

    CALLS = "calls"
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"
    USD_MICRO = "usd_micro"


LEDGER_CACHE_HITS = "cache_hits"  # the ledger's one field that is not per model


def ledger_field(model: str, metric: LedgerMetric) -> str:
    return f"{model}|{metric}"


def parse_ledger_field(field: str) -> tuple[str, str]:
    """``(model, metric)`` of a per-model ledger field."""
    model, metric = field.rsplit("|", 1)
    return model, metric


# --- Redis: keys -----------------------------------------------------------------------------

CHUNK_DONE_TTL_S = 30 * 86_400
CHUNK_ATTEMPTS_TTL_S = 7 * 86_400
TEACHER_ATTEMPTS_TTL_S = 86_400
ESCALATION_DECISION_TTL_S = 30 * 86_400
CURATION_TRIGGER_TTL_S = 86_400
CURATE_LOCK_TTL_S = 600


def queue(settings: Settings, name: str) -> str:
    """Kombu's list of a queue's waiting messages (KEDA scales on its length); no TTL."""
    return settings.redis_key_prefix + name


def unacked(settings: Settings) -> str:
    """Kombu's hash of delivered, unacknowledged messages (redelivered after the visibility timeout)."""
    return settings.redis_key_prefix + "unacked"


def stats(settings: Settings, task: str) -> str:
    """Hash of a task's counters (fields: :class:`Stat`); no TTL."""
    return _redis(settings, "stats", task)


def stats_prefix(settings: Settings) -> str:
    """What every ``stats`` key starts with (scan it to list the known tasks)."""
    return _redis(settings, "stats", "")


def dlq_reasons(settings: Settings) -> str:
    """Hash: dead-letter reason -> sessions, all tasks; no TTL."""
    return _redis(settings, "dlq", "reasons")


def dlq_task(settings: Settings, task: str) -> str:
    """Hash: dead-letter reason -> sessions, one task; no TTL."""
    return _redis(settings, "dlq", "task", task)


def chunk_done(settings: Settings, stage: str, chunk_id: str) -> str:
    """Marker: the chunk's output is committed and counted; ``CHUNK_DONE_TTL_S``."""
    return _redis(settings, "done", stage, chunk_id)


def chunk_attempts(settings: Settings, stage: str, chunk_id: str) -> str:
    """Counter of a chunk's deliveries (poison after ``max_attempts``); ``CHUNK_ATTEMPTS_TTL_S``."""
    return _redis(settings, "attempts", stage, chunk_id)


def teacher_attempts(settings: Settings, task: str, content_hash: str) -> str:
    """Counter of a session's failed teacher calls; ``TEACHER_ATTEMPTS_TTL_S``."""
    return _redis(settings, "attempts", "teacher", task, content_hash)


def seen(settings: Settings, task: str) -> str:
    """Set of the content hashes (16 raw bytes) ever enqueued for a task (dedupe); no TTL."""
    return _redis(settings, "seen", task)


def claim_reply(settings: Settings, token: str) -> str:
    """A dedupe claim's reply, kept for a retry of the same call; 1 h (set in ``claim.lua``)."""
    return _redis(settings, "claim", token)


def count_reply(settings: Settings, token: str) -> str:
    """Marker: a producer count ran, so its retry does not count twice; 1 h (``count_once.lua``)."""
    return _redis(settings, "counted", token)


def routing(settings: Settings, task: str) -> str:
    """Hash of the seed phase's counters (fields: :class:`RoutingField`); no TTL."""
    return _redis(settings, "routing", task)


def routing_strata(settings: Settings, task: str) -> str:
    """Hash: stratum value -> sessions seeded; no TTL."""
    return _redis(settings, "routing", task, "strata")


def ledger(settings: Settings, task: str) -> str:
    """Hash of teacher spend per model (fields: :func:`ledger_field`, ``LEDGER_CACHE_HITS``); no TTL."""
    return _redis(settings, "ledger", task)


def budget_keys(settings: Settings, task: str) -> list[str]:
    """A task's budget: totals (hash, :class:`BudgetField`), reservation expiries (zset) and
    amounts (hash); no TTL (reservations expire inside the scripts)."""
    base = _redis(settings, "budget", task)
    return [base, f"{base}:exp", f"{base}:amt"]


def rate_limit_keys(settings: Settings) -> list[str]:
    """The teacher rate limiter, shared by every task: request log (zset), token log (zset),
    token sum, pacing time (GCRA); each expires two windows after its last use."""
    return [_redis(settings, "rl", name) for name in ("req", "tok", "tok_sum", "tat")]


def teacher_cache(settings: Settings, model: str, prompt_version: str, content_hash: str) -> str:
    """A teacher answer (``{"label", "words"}``) for one input; ``teacher_cache_ttl_s``."""
    return _redis(settings, "cache", model, prompt_version, content_hash)


def teacher_paused(settings: Settings, task: str) -> str:
    """JSON ``{"reason", "since"}`` while the teacher waits (budget, key); 4x ``teacher_pause_s``."""
    return _redis(settings, "paused", "teacher", task)


def adapter_current(settings: Settings, task: str) -> str:
    """The promoted adapter version; no TTL (mirrored in the store)."""
    return _redis(settings, "adapter", task, "current")


def adapter_pinned(settings: Settings, task: str) -> str:
    """The version students serve whatever is promoted; no TTL (mirrored in the store)."""
    return _redis(settings, "adapter", task, "pinned")


def adapter_history(settings: Settings, task: str) -> str:
    """List of promoted versions, oldest first (rollback pops it); no TTL (mirrored)."""
    return _redis(settings, "adapter", task, "history")


def train_lock(settings: Settings, task: str, dataset_version: str) -> str:
    """A trainer's token on one bucket; ``trainer_lock_s``, renewed by its heartbeat."""
    return _redis(settings, "lock", "train", task, dataset_version)


def curate_lock(settings: Settings, task: str) -> str:
    """One curation at a time per task; ``CURATE_LOCK_TTL_S``."""
    return _redis(settings, "lock", "curate", task)


def curation(settings: Settings, task: str) -> str:
    """Hash of automatic curation's state (fields: :class:`CurationField`); no TTL."""
    return _redis(settings, "curation", task)


def curation_trigger(settings: Settings, task: str, threshold: int) -> str:
    """Marker: the trainer trigger for one threshold was sent; ``CURATION_TRIGGER_TTL_S``."""
    return _redis(settings, "curation", task, "trigger", str(threshold))


def escalation(settings: Settings, task: str) -> str:
    """Hash of the students' escalation share (fields: :class:`EscalationField`); no TTL."""
    return _redis(settings, "escalation", task)


def escalation_decision(settings: Settings, chunk_id: str) -> str:
    """How many sessions a chunk may escalate, fixed at its first delivery; ``ESCALATION_DECISION_TTL_S``."""
    return _redis(settings, "escalation", "chunk", chunk_id)


# --- Object store ------------------------------------------------------------------------------

NO_TASK = "_none"  # the task folder of dead letters that belong to no task


class BucketFile(StrEnum):
    """The files of a curated bucket ``curated/<task>/<version>/``; a marker is written last."""

    TRAIN = "train.jsonl"
    VAL = "val.jsonl"
    MANIFEST = "manifest.json"
    READY = "_READY"  # complete; the trainer takes it
    REVIEW = "_REVIEW"  # complete, waiting for ``labelq review``
    REJECTED = "_REJECTED"  # never trained
    TRAINED = "_TRAINED"  # an adapter was built from it


def split_file(split: str) -> BucketFile:
    """The file of a ``train`` or ``val`` split."""
    return BucketFile(f"{split}.jsonl")


def labels(source: str, task: str, name: str) -> str:
    """Label records of one chunk (or review, or batch) of a task."""
    return key("labels", source, segment(task), f"{segment(name)}.jsonl")


def labels_prefix(source: str, task: str | None = None) -> str:
    """Every label object of a source, or of one task of it."""
    return key("labels", source, *([segment(task)] if task is not None else [])) + "/"


def task_of_labels(path: str) -> str:
    """The task folder (as stored) of a ``labels/<source>/<task>/...`` path."""
    return path.split("/")[2]


def review_labels(task: str, version: str) -> str:
    """The human labels one review of a bucket produced."""
    return labels("human", task, f"review-{version}")


def inputs(stage: str, task: str, name: str) -> str:
    """The sessions a chunk labelled (curation turns them into training prompts)."""
    return key("inputs", stage, segment(task), f"{segment(name)}.jsonl")


def inputs_prefix(stage: str, task: str) -> str:
    return key("inputs", stage, segment(task)) + "/"


def dead_letters(stage: str, task: str | None, name: str) -> str:
    """Dead letters of one chunk (workers) or one flushed batch (ingest), with their reasons."""
    return key("deadletter", stage, segment(task or NO_TASK), f"{segment(name)}.jsonl")


def dead_letters_prefix(stage: str | None = None, task: str | None = None) -> str:
    """Every dead letter, those of one stage, or of one stage and task."""
    parts = [stage] if stage else []
    if stage and task is not None:
        parts.append(segment(task))
    return key("deadletter", *parts) + "/"


def curated_prefix(task: str | None = None) -> str:
    """Every curated bucket, or those of one task."""
    return key("curated", *([segment(task)] if task is not None else [])) + "/"


def bucket(task: str, version: str) -> str:
    """A curated bucket's folder (``version`` is ``v0001``, ``v0002``...)."""
    return key("curated", segment(task), version)


def bucket_file(task: str, version: str, name: BucketFile) -> str:
    return f"{bucket(task, version)}/{name}"


def parse_bucket_file(path: str) -> tuple[str, str, str] | None:
    """``(task folder as stored, version, file name)`` of a path inside a bucket, else None."""
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "curated":
        return None
    return parts[1], parts[2], parts[3]


class AdapterFile(StrEnum):
    """The files of an adapter version ``adapters/<task>/v<N>/``; ``metrics.json`` is written last."""

    WEIGHTS = "adapter_model.safetensors"
    CONFIG = "adapter_config.json"  # vLLM loads these two
    TRAIN_CONFIG = "train_config.json"
    DATASET = "dataset.json"  # the curated bucket it was trained on
    METRICS = "metrics.json"  # evaluation and gate; a version exists once this exists


def adapter_prefix(task: str, version: int | None = None) -> str:
    """A task's adapters folder, or one version's (``adapters/<task>/v<N>``)."""
    base = key("adapters", segment(task))
    return base if version is None else f"{base}/v{version}"


def adapter_file(task: str, version: int, name: AdapterFile) -> str:
    """One file of an adapter version."""
    return f"{adapter_prefix(task, version)}/{name}"


def adapter_version_of(path: str) -> int | None:
    """The version of an ``adapters/<task>/v<N>/...`` path, else None."""
    parts = path.split("/")
    if len(parts) < 4 or parts[0] != "adapters" or not parts[2].startswith("v") or not parts[2][1:].isdigit():
        return None
    return int(parts[2][1:])


def registry_mirror(task: str) -> str:
    """The store's copy of a task's adapter pointer (Redis may be lost; this is not)."""
    return f"{adapter_prefix(task)}/registry.json"
