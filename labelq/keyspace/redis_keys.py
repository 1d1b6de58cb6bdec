"""Redis key families: ``<redis_key_prefix><part>:<part>...``, what each holds and its TTL."""

from __future__ import annotations

from labelq.settings import Settings


def _redis(settings: Settings, *parts: str) -> str:
    return settings.redis_key_prefix + ":".join(parts)


CHUNK_DONE_TTL_S = 30 * 86_400
CHUNK_ATTEMPTS_TTL_S = 7 * 86_400
TEACHER_ATTEMPTS_TTL_S = 86_400
ESCALATION_DECISION_TTL_S = 30 * 86_400
CURATION_TRIGGER_TTL_S = 86_400
CURATE_LOCK_TTL_S = 600
BATCH_SETTLED_TTL_S = 30 * 86_400


def queue(settings: Settings, name: str) -> str:
    """Kombu's list of a queue's waiting messages (KEDA scales on its length); no TTL."""
    return settings.redis_key_prefix + name


def unacked(settings: Settings) -> str:
    """Kombu's hash of delivered, unacknowledged messages (redelivered after the visibility timeout)."""
    return settings.redis_key_prefix + "unacked"


def unacked_index(settings: Settings) -> str:
    """Kombu's sorted set of the ``unacked`` hash's delivery tags by delivery time (its restore sweep reads it)."""
    return settings.redis_key_prefix + "unacked_index"


def parked(settings: Settings, queue: str, task: str) -> str:
    """List of a task's chunk messages of ``queue`` that cannot be served yet (a student task with no
    adapter), in kombu's queue format, newest on the left: not a kombu queue, so no worker takes them and
    KEDA does not count them. Moved back to the queue when the task can be served (``labelq.queue.parking``);
    in flight for the audit; no TTL."""
    return _redis(settings, "parked", queue, task)


def task_registry(settings: Settings) -> str:
    """Set of the task names that have counters (``stats``): added to in the same step as a task's first
    counts (an enqueue, a chunk commit, a redrive), so status and audit never scan the keyspace; no TTL."""
    return _redis(settings, "tasks")


def task_registry_complete(settings: Settings) -> str:
    """Marker: ``task_registry`` also holds every task counted before the registry existed (one SCAN of
    ``stats_prefix``, the first time a reader finds the marker missing); no TTL."""
    return _redis(settings, "tasks", "complete")


def stats(settings: Settings, task: str) -> str:
    """Hash of a task's counters (fields: :class:`Stat`); no TTL."""
    return _redis(settings, "stats", task)


def stats_prefix(settings: Settings) -> str:
    """What every ``stats`` key starts with (scanned once, to fill ``task_registry`` on a Redis that predates it)."""
    return _redis(settings, "stats", "")


def dlq_reasons(settings: Settings) -> str:
    """Hash: dead-letter reason -> sessions, all tasks; no TTL."""
    return _redis(settings, "dlq", "reasons")


def dlq_task(settings: Settings, task: str) -> str:
    """Hash: dead-letter reason -> sessions, one task; no TTL."""
    return _redis(settings, "dlq", "task", task)


def dlq_redriven(settings: Settings) -> str:
    """Set of the dead letters sent back by ``labelq deadletter redrive`` (letter ids); no TTL."""
    return _redis(settings, "dlq", "redriven")


def redrive_outbox(settings: Settings) -> str:
    """Hash: chunk id -> a redrive chunk counted out of the dead letters and not yet published
    (``{"queue", "chunk"}``; in flight for the audit); emptied as each is published; no TTL."""
    return _redis(settings, "dlq", "outbox")


def teacher_handback(settings: Settings, chunk_id: str) -> str:
    """JSON list of the content hashes a teacher chunk handed back, written before its commit;
    ``CHUNK_DONE_TTL_S``."""
    return _redis(settings, "handback", chunk_id)


def chunk_done(settings: Settings, stage: str, chunk_id: str) -> str:
    """Marker: the chunk's output is committed and counted; ``CHUNK_DONE_TTL_S``."""
    return _redis(settings, "done", stage, chunk_id)


def chunk_attempts(settings: Settings, stage: str, chunk_id: str) -> str:
    """Counter of a chunk's deliveries (poison after ``max_attempts``); ``CHUNK_ATTEMPTS_TTL_S``."""
    return _redis(settings, "attempts", stage, chunk_id)


def teacher_attempts(settings: Settings, task: str, content_hash: str) -> str:
    """Counter of a session's failed teacher calls; ``TEACHER_ATTEMPTS_TTL_S``."""
    return _redis(settings, "attempts", "teacher", task, content_hash)


def seen(settings: Settings, task: str, bucket: str) -> str:
    """Set of the content hashes (16 raw bytes) enqueued for a task in one dedupe bucket (six UTC
    days, named by the first, ``2026-11-21``; see ``labelq.dedupe``); a hash enters it in the same
    step as its chunk enters a queue (``enqueue.lua``); expires ``dedupe_window_days`` after the
    bucket ends."""
    return _redis(settings, "seen", task, bucket)


def seen_count(settings: Settings, task: str, bucket: str) -> str:
    """How many hashes ``enqueue.lua`` added to that bucket's set (the audit compares the two);
    expires with the set."""
    return _redis(settings, "seen", task, bucket, "n")


def seen_legacy(settings: Settings, task: str) -> str:
    """The one dedupe set per task of labelq before buckets: still read by lookups, given a TTL of
    one window by the first enqueue that finds it without one."""
    return _redis(settings, "seen", task)


def memory_reserve(settings: Settings) -> str:
    """A string of ``redis_memory_reserve_share`` x maxmemory zero bytes, held while Redis has room
    and deleted by a worker that meets a full Redis, so the queues can still be drained
    (``labelq.redis_memory``); no TTL."""
    return _redis(settings, "memory", "reserve")


def claim_reply(settings: Settings, token: str) -> str:
    """Marker: an enqueue (claim, push, count) ran, so its retry after a lost reply does not find
    its own hashes taken or push twice; 1 h (set in ``enqueue.lua``)."""
    return _redis(settings, "claim", token)


def routing(settings: Settings, task: str) -> str:
    """Hash of the seed phase's counters (fields: :class:`RoutingField`); no TTL."""
    return _redis(settings, "routing", task)


def routing_strata(settings: Settings, task: str) -> str:
    """Hash: stratum value -> sessions seeded; no TTL."""
    return _redis(settings, "routing", task, "strata")


def sample_secret(settings: Settings) -> str:
    """The teacher sample's HMAC key as first proposed (``SET NX``: the one every producer takes while the
    store has none; the store's copy is the durable one, see ``labelq.sampling``); no TTL."""
    return _redis(settings, "secret", "sample")


def ledger(settings: Settings, task: str) -> str:
    """Hash of teacher spend per model (fields: :func:`ledger_field`, ``LEDGER_CACHE_HITS``); no TTL."""
    return _redis(settings, "ledger", task)


def budget_keys(settings: Settings, task: str, period_id: str) -> list[str]:
    """A task's budget in one period (``total``, ``2026-11``, ``2026-11-21``): totals (hash,
    :class:`BudgetField`), reservation expiries (zset) and amounts (hash). Reservations expire inside
    the scripts; a month's or a day's keys expire a week after the period ends (``labelq.budget``)."""
    base = _redis(settings, "budget", task, period_id)
    return [base, f"{base}:exp", f"{base}:amt"]


def budget_legacy(settings: Settings, task: str) -> str:
    """The totals hash of a task's budget from before budget periods (read once, to seed ``total``)."""
    return _redis(settings, "budget", task)


def batch_settled(settings: Settings, task: str, job: str, part: str) -> str:
    """Marker: a Batch API part's spend is in the ledger and the budget (counted once); ``BATCH_SETTLED_TTL_S``."""
    return _redis(settings, "batch", "settled", task, job, part)


def batch_lock(settings: Settings, task: str, job: str) -> str:
    """One ``labelq teach --batch-api`` at a time per job; renewed while it polls (``batch.py``)."""
    return _redis(settings, "lock", "batch", task, job)


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


def teacher_breaker(settings: Settings) -> list[str]:
    """The provider's circuit breaker, shared by every teacher worker: open flag (JSON ``{"reason"}``,
    TTL = open time), outage start (unix time; a day), outage errors and answers in the window
    (TTL = window), half-open probe lock (TTL = two request timeouts)."""
    return [_redis(settings, "breaker", name) for name in ("open", "since", "fails", "ok", "probe")]


def stage_waiting(settings: Settings, stage: str) -> str:
    """Hash ``{on, kind, since, detail}`` while a stage's workers wait on an outage or on
    configuration; refreshed by each wait, gone 5 minutes after the last."""
    return _redis(settings, "waiting", stage)


def adapter_current(settings: Settings, task: str) -> str:
    """The promoted adapter version; no TTL (mirrored in the store)."""
    return _redis(settings, "adapter", task, "current")


def adapter_pinned(settings: Settings, task: str) -> str:
    """The version students serve whatever is promoted; no TTL (mirrored in the store)."""
    return _redis(settings, "adapter", task, "pinned")


def adapter_history(settings: Settings, task: str) -> str:
    """List of promoted versions, oldest first (rollback pops it); no TTL (mirrored)."""
    return _redis(settings, "adapter", task, "history")


def adapter_hashes(settings: Settings, task: str) -> str:
    """Hash: adapter version -> content hash of its manifest (``labelq.adapter_manifest``); no TTL (mirrored)."""
    return _redis(settings, "adapter", task, "hashes")


def adapter_counter(settings: Settings, task: str) -> str:
    """The last adapter version handed out; no TTL (a lost counter resumes above the store's versions)."""
    return _redis(settings, "adapter", task, "counter")


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


def agreement_pair(settings: Settings, task: str, content_hash: str) -> str:
    """Hash of one sampled session's two answers until both are in (fields: :class:`PairField`); the second
    to arrive scores the pair and deletes it; ``agreement_pair_ttl_s`` (a half that never meets its other)."""
    return _redis(settings, "agreement", "pair", task, content_hash)


def agreement_window(settings: Settings, task: str, version: int, window_start: int) -> str:
    """Hash of the agreement counts of one adapter version in one window (fields: :class:`AgreementField`);
    expires ``agreement_keep_windows`` windows after the window starts."""
    return _redis(settings, "agreement", task, f"v{version}", str(window_start))


def agreement_index(settings: Settings, task: str) -> str:
    """Sorted set of a task's agreement windows (member ``<version>:<window start>``, score the start),
    trimmed to the kept windows at each write; expires with the newest window."""
    return _redis(settings, "agreement", task, "windows")


def agreement_cosine(settings: Settings, task: str) -> str:
    """List of scored pairs waiting to be embedded by the trainer's monitor (JSON ``{v, w, t, s}``), newest
    on the left, trimmed to ``agreement_cosine_backlog``; expires with the newest window."""
    return _redis(settings, "agreement", task, "cosine")


def agreement_state(settings: Settings, task: str) -> str:
    """JSON of the task's live quality as the trainer's monitor last judged it (figures, degraded,
    last rollback; ``labelq.agreement.QualityState``), read by status and metrics; two windows."""
    return _redis(settings, "agreement", task, "state")


def agreement_rollback(settings: Settings, task: str, version: int) -> str:
    """Marker: the monitor rolled this version back (``SET NX``: once, whatever the number of trainers);
    ``CHUNK_DONE_TTL_S``."""
    return _redis(settings, "agreement", task, f"v{version}", "rolled_back")
