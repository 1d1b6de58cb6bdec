"""Prices and the cost ledger: tokens and dollars per task and model, in Redis."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import redis

from labelq import keyspace
from labelq.errors import ConfigError
from labelq.keyspace import LEDGER_CACHE_HITS, LedgerMetric, ledger_field
from labelq.settings import PRICES_AS_OF, Settings
from labelq.spec import TaskSpec

MICRO = 1_000_000  # dollars are stored as integer micro-dollars: no float drift across workers
SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}|-\d{4}")  # -2024-11-20, or the older -0613


@dataclass(slots=True)
class ModelSpend:
    """Teacher calls of one model for one task (cache hits are not calls)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Ledger:
    """A task's teacher spend: per model, in total, and the calls the cache saved."""

    models: dict[str, ModelSpend]
    cache_hits: int

    @property
    def usd(self) -> float:
        return sum(m.usd for m in self.models.values())


@dataclass(frozen=True, slots=True)
class CostSummary:
    """Dollars per 1,000 labels, teacher and student, and the savings against teacher-only labelling."""

    teacher_usd: float
    student_usd: float
    teacher_per_1k_usd: float | None  # None: no teacher label yet
    student_per_1k_usd: float | None  # None: no student label yet
    savings: float | None  # share saved against labelling everything with the teacher

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def model_price(settings: Settings, model: str) -> tuple[float, float]:
    """USD per 1M tokens (input, output) of ``model``: its own entry, else its family's for a dated snapshot.

    ``gpt-4o-2024-11-20`` is priced like ``gpt-4o`` and ``gpt-4o-mini-2024-07-18`` like ``gpt-4o-mini``:
    the longest family name the model extends with nothing but a date. Anything else has no price,
    and labelq never guesses one (an unpriced model would spend a budget at $0 a call).
    """
    table = settings.teacher_prices
    if model in table:
        return table[model]
    for family in sorted(table, key=len, reverse=True):
        if model.startswith(family) and SNAPSHOT_SUFFIX.fullmatch(model[len(family):]):
            return table[family]
    raise ConfigError(
        f"no price for teacher model {model!r}: add its USD per 1M input and output tokens with "
        f"LABELQ_TEACHER_PRICES='{{\"{model}\": [input_usd, output_usd]}}' or in the config file under "
        f"[teacher.prices] (\"{model}\" = [input_usd, output_usd]). Priced now (built-ins are OpenAI list "
        f"prices as of {PRICES_AS_OF}; their dated snapshots too): "
        f"{', '.join(sorted(m for m in table if m != 'replay'))}")


def price_usd(settings: Settings, model: str, input_tokens: int, output_tokens: int,
              *, discount: float = 1.0) -> float:
    """Cost of one call; reasoning tokens are in ``output_tokens``. Raises ConfigError for an unpriced model."""
    per_in, per_out = model_price(settings, model)
    return discount * (input_tokens * per_in + output_tokens * per_out) / 1_000_000


def to_micro(usd: float) -> int:
    return round(usd * MICRO)


def call_increments(settings: Settings, *, task: str, model: str, input_tokens: int,
                    output_tokens: int, cost_usd: float) -> list[tuple[str, str, int]]:
    """The ledger's ``HINCRBY`` triples for one paid call (sync and async clients apply them)."""
    key = keyspace.ledger(settings, task)
    return [(key, ledger_field(model, LedgerMetric.CALLS), 1),
            (key, ledger_field(model, LedgerMetric.INPUT_TOKENS), input_tokens),
            (key, ledger_field(model, LedgerMetric.OUTPUT_TOKENS), output_tokens),
            (key, ledger_field(model, LedgerMetric.USD_MICRO), to_micro(cost_usd))]


def read_ledger(client: redis.Redis, settings: Settings, task: str) -> Ledger:
    """Calls, tokens and dollars per model of a task, and its cache hits."""
    raw: dict[bytes, bytes] = client.hgetall(keyspace.ledger(settings, task))  # type: ignore[assignment]
    return ledger_from_hash(raw)


def ledger_from_hash(raw: dict[bytes, bytes]) -> Ledger:
    """The ledger in the fields of its hash (``keyspace.ledger``, read by the caller: status pipelines it)."""
    models: dict[str, ModelSpend] = {}
    cache_hits = 0
    for field, value in raw.items():
        name = field.decode()
        if name == LEDGER_CACHE_HITS:
            cache_hits = int(value)
            continue
        model, metric = keyspace.parse_ledger_field(name)
        entry = models.setdefault(model, ModelSpend())
        if metric == LedgerMetric.USD_MICRO:
            entry.usd = int(value) / MICRO
        elif metric == LedgerMetric.CALLS:
            entry.calls = int(value)
        elif metric == LedgerMetric.INPUT_TOKENS:
            entry.input_tokens = int(value)
        elif metric == LedgerMetric.OUTPUT_TOKENS:
            entry.output_tokens = int(value)
    return Ledger(models=models, cache_hits=cache_hits)


def budget_limit_usd(settings: Settings, spec: TaskSpec) -> float:
    """A task's teacher spend cap: the spec's own, else the setting."""
    return spec.budget_usd if spec.budget_usd is not None else settings.teacher_budget_usd


def cost_summary(*, teacher_usd: float, teacher_labels: int, student_engine_s: float, student_labels: int,
                 usd_per_gpu_hour: float) -> CostSummary:
    """Dollars per 1,000 labels, teacher and student, and the savings against teacher-only labelling."""
    student_usd = student_engine_s / 3600 * usd_per_gpu_hour
    teacher_per_1k = teacher_usd / teacher_labels * 1000 if teacher_labels else None
    student_per_1k = student_usd / student_labels * 1000 if student_labels else None
    total = teacher_labels + student_labels
    savings = None
    if teacher_per_1k and total:
        savings = 1 - (teacher_usd + student_usd) / (teacher_per_1k * total / 1000)
    return CostSummary(
        teacher_usd=round(teacher_usd, 6), student_usd=round(student_usd, 6),
        teacher_per_1k_usd=None if teacher_per_1k is None else round(teacher_per_1k, 4),
        student_per_1k_usd=None if student_per_1k is None else round(student_per_1k, 6),
        savings=None if savings is None else round(savings, 4),
    )
