"""Every protocol string of labelq, defined once: Redis keys, hash field names, store paths.

Import it as ``from labelq import keyspace`` and write ``keyspace.stats(settings, task)``;
the three modules behind it:

* ``redis_keys``: Redis keys are ``<redis_key_prefix><part>:<part>...`` (the
  prefix isolates a deployment or a test); each function names one key family,
  says what it holds and how long it lives. Kombu's own keys (queue lists, the
  ``unacked`` hash) take the same prefix without a separator, through kombu's
  ``global_keyprefix``.
* ``fields``: hash field names, as ``StrEnum`` classes; the Lua scripts in
  ``labelq/lua/`` name the same fields (a unit test checks they agree).
* ``store_paths``: object-store paths (below).

Object-store paths are built from :func:`labelq.store.keys.key` and
:func:`~labelq.store.keys.segment`, so a task name or chunk id from data can
never leave its folder::

    labels/<source>/<task>/<chunk>.jsonl          label records (teacher, student, human)
    inputs/<stage>/<task>/<chunk>.jsonl           the sessions a chunk labelled
    deadletter/<stage>/<task>/<name>.jsonl        dead letters (ingest, teacher, student)
    curated/<task>/<version>/{train,val}.jsonl    a curated bucket, manifest.json, then a marker
    adapters/<task>/v<N>/...                      an adapter version; adapters/<task>/registry.json
    secrets/sample.key                            the teacher sample's HMAC key (private)
"""

from __future__ import annotations

from labelq.keyspace.fields import (
    LEDGER_CACHE_HITS,
    BudgetField,
    CurationField,
    EscalationField,
    LedgerMetric,
    RoutingField,
    Stat,
    dead_stat,
    labelled_stat,
    ledger_field,
    parse_ledger_field,
)
from labelq.keyspace.redis_keys import (
    CHUNK_ATTEMPTS_TTL_S,
    CHUNK_DONE_TTL_S,
    CURATE_LOCK_TTL_S,
    CURATION_TRIGGER_TTL_S,
    ESCALATION_DECISION_TTL_S,
    TEACHER_ATTEMPTS_TTL_S,
    adapter_current,
    adapter_history,
    adapter_pinned,
    budget_keys,
    chunk_attempts,
    chunk_done,
    claim_reply,
    count_reply,
    curate_lock,
    curation,
    curation_trigger,
    dlq_reasons,
    dlq_task,
    escalation,
    escalation_decision,
    ledger,
    queue,
    rate_limit_keys,
    routing,
    routing_strata,
    sample_secret,
    seen,
    stats,
    stats_prefix,
    teacher_attempts,
    teacher_cache,
    teacher_paused,
    train_lock,
    unacked,
)
from labelq.keyspace.store_paths import (
    NO_TASK,
    AdapterFile,
    BucketFile,
    adapter_file,
    adapter_prefix,
    adapter_version_of,
    bucket,
    bucket_file,
    curated_prefix,
    dead_letters,
    dead_letters_prefix,
    inputs,
    inputs_prefix,
    labels,
    labels_prefix,
    parse_bucket_file,
    registry_mirror,
    review_labels,
    sample_secret_object,
    split_file,
    task_of_labels,
)

__all__ = [
    "CHUNK_ATTEMPTS_TTL_S",
    "CHUNK_DONE_TTL_S",
    "CURATE_LOCK_TTL_S",
    "CURATION_TRIGGER_TTL_S",
    "ESCALATION_DECISION_TTL_S",
    "LEDGER_CACHE_HITS",
    "NO_TASK",
    "TEACHER_ATTEMPTS_TTL_S",
    "AdapterFile",
    "BucketFile",
    "BudgetField",
    "CurationField",
    "EscalationField",
    "LedgerMetric",
    "RoutingField",
    "Stat",
    "adapter_current",
    "adapter_file",
    "adapter_history",
    "adapter_pinned",
    "adapter_prefix",
    "adapter_version_of",
    "bucket",
    "bucket_file",
    "budget_keys",
    "chunk_attempts",
    "chunk_done",
    "claim_reply",
    "count_reply",
    "curate_lock",
    "curated_prefix",
    "curation",
    "curation_trigger",
    "dead_letters",
    "dead_letters_prefix",
    "dead_stat",
    "dlq_reasons",
    "dlq_task",
    "escalation",
    "escalation_decision",
    "inputs",
    "inputs_prefix",
    "labelled_stat",
    "labels",
    "labels_prefix",
    "ledger",
    "ledger_field",
    "parse_bucket_file",
    "parse_ledger_field",
    "queue",
    "rate_limit_keys",
    "registry_mirror",
    "review_labels",
    "routing",
    "routing_strata",
    "sample_secret",
    "sample_secret_object",
    "seen",
    "split_file",
    "stats",
    "stats_prefix",
    "task_of_labels",
    "teacher_attempts",
    "teacher_cache",
    "teacher_paused",
    "train_lock",
    "unacked",
]
