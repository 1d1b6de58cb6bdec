"""Field names of labelq's Redis hashes (the Lua scripts in ``labelq/lua/`` name the same)."""

from __future__ import annotations

from enum import StrEnum


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
    """Fields of the ``budget:<task>:<period>`` hash, integer micro-dollars (``budget_*.lua``)."""

    SPENT = "spent"
    RESERVED = "reserved"
    SEEDED = "seeded"  # when the period's totals were started from the durable record (ms); absent: not yet


class AgreementField(StrEnum):
    """Fields of an ``agreement:<task>:<version>:<window>`` hash (``labelq.agreement``)."""

    N = "n"  # pairs scored (teacher label and shadow label of one session)
    EXACT = "exact"  # pairs equal after normalisation
    WITHIN = "within"  # pairs whose shadow answer is within the output contract
    COSINE_SUM = "cosine_sum"  # sum of the cosines embedded so far (float)
    COSINE_N = "cosine_n"  # pairs embedded so far (the trainer's monitor embeds them in batches)


class PairField(StrEnum):
    """Fields of an ``agreement:pair:<task>:<content hash>`` hash: one half each (JSON)."""

    TEACHER = "teacher"
    SHADOW = "shadow"


class EscalationField(StrEnum):
    """Fields of the ``escalation:<task>`` hash (``escalation_grant.lua``)."""

    SEEN = "seen"
    GRANTED = "granted"


class CurationField(StrEnum):
    """Fields of the ``curation:<task>`` hash."""

    LABELS_AT = "labels_at"  # teacher labels when the last automatic bucket was built
    FORCED = "forced"  # present: the next bucket is due now, whatever the count (a rollback asked for it)


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
