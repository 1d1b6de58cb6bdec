"""The one typed settings object, read once at the edge and passed down.

Sources, highest priority first: constructor arguments, ``LABELQ_*``
environment variables, the TOML file named by ``LABELQ_CONFIG_FILE`` (or
``--config``), then the defaults below. TOML tables are flattened with ``_``,
so ``[teacher] rpm = 500`` sets ``teacher_rpm`` like ``LABELQ_TEACHER_RPM``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from labelq.errors import ConfigError

QUEUES: tuple[str, ...] = ("teacher", "student", "trainer")
# USD per 1M tokens (input, output): OpenAI's published standard-tier list prices as of PRICES_AS_OF,
# written down from the public pricing page as it stood then (not fetched at run time; cached-input
# discounts left out, so estimates err high). Check https://openai.com/api/pricing before trusting a
# budget; LABELQ_TEACHER_PRICES or [teacher.prices] in the config file adds or replaces entries.
# A dated snapshot (gpt-4o-2024-11-20) is priced like its family (gpt-4o): labelq.ledger.model_price.
PRICES_AS_OF = "2025-08"
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "replay": (2.50, 10.00),  # the offline demo teacher is priced like gpt-4o
}
EMBEDDED_REDIS_MAXMEMORY_MB = 2_048
# A config file named by the caller of load_settings (beats LABELQ_CONFIG_FILE).
_CONFIG_FILE: ContextVar[str | None] = ContextVar("labelq_config_file", default=None)


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "labelq"


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name, or "" (every address)
        return False


class Settings(BaseSettings):
    """Every knob labelq has. Units are in the names; descriptions show in `labelq config show`."""

    model_config = SettingsConfigDict(
        env_prefix="LABELQ_", extra="forbid", validate_default=True, populate_by_name=True
    )

    # --- where state lives -------------------------------------------------
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Directory for local state: embedded Redis data, local store, model cache.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL (broker and state). Unset: an embedded redis-server under state_dir.",
    )
    redis_key_prefix: str = Field(
        default="labelq:",
        description="Prefix of every Redis key labelq and its queues use (isolates deployments).",
    )
    redis_outage_max_s: float = Field(
        default=120.0, ge=0,
        description="How long a producer waits for Redis to come back (a restart) before it gives up.",
    )
    redis_maxmemory_mb: int = Field(
        default=EMBEDDED_REDIS_MAXMEMORY_MB, gt=0,
        description="maxmemory of the embedded Redis, in MiB (noeviction: writes are refused beyond it). "
        "A Redis of your own (LABELQ_REDIS_URL) takes its cap from its own config (infra/redis.conf).",
    )
    redis_memory_high_water: float = Field(
        default=0.8, gt=0, le=1,
        description="Producers pause while Redis uses more than this share of its maxmemory.",
    )
    redis_memory_low_water: float = Field(
        default=0.7, gt=0, le=1, description="A producer paused on Redis memory resumes below this share.",
    )
    redis_memory_reserve_share: float = Field(
        default=0.02, ge=0, lt=0.5,
        description="Share of maxmemory held in reserve (one key) while Redis is below the low water; "
        "a worker that meets a full Redis frees it, so the queues can still be drained. 0: none.",
    )
    dedupe_window_days: float = Field(
        default=30.0, gt=0,
        description="A session is a duplicate when the same content was enqueued for its task within "
        "this many days (at least; up to one dedupe bucket more); older claims expire.",
    )
    dedupe_bucket_s: int = Field(
        default=6 * 86_400, gt=0,
        description="Length of one dedupe bucket (a set that expires whole): six UTC days, so a lookup "
        "checks 7 sets in a 30-day window. Changing it hides the claims made in buckets of the old length.",
    )
    store_url: str | None = Field(
        default=None,
        description="Object store: file:///dir or s3://bucket/prefix. Unset: file://<state_dir>/store.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint for MinIO or another S3-protocol server."
    )
    s3_region: str = Field(default="us-east-1", description="S3 region name.")

    # --- sessions and ingestion ---------------------------------------------
    session_id_field: str = Field(
        default="session_id", description="Dotted path of the session id inside a session object."
    )
    reference_field: str = Field(
        default="_reference",
        description="Top-level field holding ground truth (label, journey); never shown to a model.",
    )
    max_session_bytes: int = Field(
        default=1_000_000, gt=0, description="Largest accepted session, in bytes of JSON."
    )
    max_session_depth: int = Field(
        default=64, gt=0, description="Deepest accepted nesting of objects and arrays."
    )
    max_session_id_chars: int = Field(default=256, gt=0, description="Longest accepted session id.")
    chunk_size: int = Field(default=64, gt=0, description="Sessions per queue message (chunk).")
    ingest_processes: int = Field(
        # Twice the cores: while one process waits on Redis, another parses.
        default_factory=lambda: min(8, 2 * (os.cpu_count() or 1)),
        ge=1,
        description="Processes that ingest one large local JSONL file, by byte range (1: no split).",
    )
    ingest_split_min_bytes: int = Field(
        default=32 << 20, gt=0, description="Local files at least this large are split across processes."
    )
    publish_batch_chunks: int = Field(
        default=16, gt=0, description="Chunks deduplicated and published per Redis round trip."
    )
    queue_high_water_chunks: int = Field(
        default=2_000, gt=0, description="Producer pauses while a queue holds more chunks than this."
    )
    queue_low_water_chunks: int = Field(
        default=1_000, ge=0, description="A paused producer resumes below this many chunks."
    )
    queue_high_water_bytes: int = Field(
        default=256 << 20, gt=0,
        description="Producer pauses while a queue's Redis list takes more bytes than this (MEMORY USAGE).",
    )
    queue_low_water_bytes: int = Field(
        default=128 << 20, ge=0,
        description="A producer paused on bytes resumes below this many (at or above the high mark: as soon "
                    "as its batch fits).",
    )
    backpressure_poll_s: float = Field(
        default=0.5, gt=0, description="How often a paused producer re-reads queue depth."
    )
    claim_check_bytes: int = Field(
        default=32 << 10, ge=0,
        description="Sessions whose JSON is larger go to the object store (payloads/); their message "
                    "carries a reference (claim check).",
    )
    claim_check_retention_days: int = Field(
        default=30, gt=0,
        description="Claim-checked payloads older than this are deleted (`labelq payloads prune`, or the "
                    "bucket's lifecycle rule); a session still queued then is dead-lettered payload_missing.",
    )
    dead_letter_raw_max_bytes: int = Field(
        default=4_096, gt=0, description="Raw input kept with a dead-letter record, truncated."
    )
    dead_letter_flush_records: int = Field(
        default=500, gt=0, description="Dead-letter records buffered before one store write."
    )
    default_task: str = Field(default="session-label", description="Task spec used when none is named.")

    # --- delivery -----------------------------------------------------------
    visibility_timeout_s: int = Field(
        default=3_600,
        gt=0,
        description="Seconds before an unacked message is redelivered; above the longest chunk.",
    )
    max_attempts: int = Field(
        default=5, gt=0,
        description="Failed deliveries of one chunk before it is halved (a lone session: dead-lettered). "
                    "Outages and configuration errors are not failed deliveries.",
    )
    outage_backoff_base_s: float = Field(
        default=1.0, gt=0, description="First wait of a worker whose dependency is down; doubles per outage.")
    outage_backoff_max_s: float = Field(
        default=60.0, gt=0, description="Longest wait between a worker's tries through an outage.")

    # --- tasks and the teacher -------------------------------------------------
    specs_dir: Path | None = Field(
        default=None, description="Directory of user task specs (*.toml); built-ins are always there."
    )
    teacher_backend: str = Field(
        default="openai",
        description="openai (any OpenAI-compatible API; needs a key) or replay (the data set's reference "
        "labels, offline, no API calls): replay runs only when chosen here (or by the demo).",
    )
    teacher_base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL (Azure, vLLM, a proxy). Unset: OpenAI."
    )
    teacher_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("LABELQ_TEACHER_API_KEY", "OPENAI_API_KEY", "teacher_api_key"),
        description="API key (LABELQ_TEACHER_API_KEY or OPENAI_API_KEY; blank counts as unset). The openai "
        "teacher refuses to start without one, except on a self-hosted base URL (vLLM, a local proxy).",
    )
    teacher_model: str = Field(default="gpt-4o", description="Teacher model name sent to the API.")
    teacher_concurrency: int = Field(
        default=16, gt=0, description="Concurrent teacher requests per worker process (within a chunk)."
    )
    teacher_rpm: int = Field(default=500, gt=0, description="Global teacher requests per minute, all workers.")
    teacher_tpm: int = Field(default=200_000, gt=0, description="Global teacher tokens per minute, all workers.")
    teacher_rate_window_s: float = Field(
        default=60.0, gt=0, description="Window of the rate limits (60: per minute; shorter only in tests)."
    )
    teacher_budget_usd: float = Field(
        default=50.0, ge=0, description="Hard teacher spend cap per task spec, in USD (a spec may set its own)."
    )
    teacher_budget_period: Literal["total", "month", "day"] = Field(
        default="total",
        description="What the budget caps: all spend (total), or spend per UTC calendar month or day.",
    )
    teacher_batch_max_requests: int = Field(
        default=50_000, gt=0, description="Requests per Batch API batch (the provider's limit); larger rounds split."
    )
    teacher_batch_max_bytes: int = Field(
        default=200_000_000, gt=0,
        description="Bytes of one Batch API input file (the provider's limit, 200 MB); larger rounds split.",
    )
    teacher_timeout_s: float = Field(default=60.0, gt=0, description="Timeout of one teacher request.")
    teacher_max_attempts: int = Field(
        default=5, gt=0, description="Attempts per session on transient errors before dead-lettering."
    )
    teacher_backoff_base_s: float = Field(default=0.5, gt=0, description="First retry delay; doubles, with jitter.")
    teacher_backoff_max_s: float = Field(default=30.0, gt=0, description="Longest retry delay.")
    teacher_pause_s: float = Field(
        default=15.0, gt=0,
        description="How long a worker waits before requeueing work while paused (budget, auth, provider outage)."
    )
    teacher_breaker_threshold: int = Field(
        default=5, gt=0, description="Provider outage errors (5xx, 429, timeouts) within the window that open "
                                     "the circuit breaker shared by all teacher workers, when they are at least "
                                     "as many as the answers in that window.")
    teacher_breaker_window_s: float = Field(
        default=30.0, gt=0, description="Window in which outage errors are counted toward the breaker.")
    teacher_breaker_open_s: float = Field(
        default=30.0, gt=0, description="How long the breaker stays open before one request probes the provider "
                                        "(longer when the provider's Retry-After says so).")
    teacher_cache_ttl_s: int = Field(
        default=90 * 86_400, gt=0, description="How long a paid answer is remembered (never pay twice)."
    )
    teacher_replay_latency_s: float = Field(
        default=0.02, ge=0, description="Simulated latency of the replay teacher."
    )
    teacher_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description=f"USD per 1M tokens (input, output) per model, merged over the built-in table (OpenAI list "
        f"prices as of {PRICES_AS_OF}); a dated snapshot takes its family's price; an unpriced teacher model "
        "is refused. 'replay' prices the offline teacher.",
    )
    teacher_reasoning_tokens: int | None = Field(
        default=None, ge=0,
        description="Output tokens a reasoning model may spend thinking per request, on top of the spec's "
        "max_output_tokens (sent as max_completion_tokens, reserved from the budget at the output price). "
        "Unset: 2048 for o-series and gpt-5 models, 0 for others; above 0 any model is sent as a reasoning one.",
    )

    # --- student and trainer ---------------------------------------------------
    student_model: str = Field(
        default="tiny",
        description="Base model: a hub name, a local path, or 'tiny' (built offline by `labelq model tiny`).",
    )
    student_backend: str = Field(
        default="auto",
        description="vllm (in-process vllm.LLM), transformers (batched generate + PEFT), openai (a remote "
        "OpenAI-compatible server that loads adapters at run time), or auto: vllm when installed.",
    )
    student_base_url: str | None = Field(
        default=None, description="Base URL of the remote student server (student_backend=openai)."
    )
    student_api_key: SecretStr | None = Field(
        default=None, description="API key of the remote student server, if it needs one."
    )
    student_dtype: str = Field(
        default="auto", description="Engine dtype: auto (bf16 on a GPU, fp32 on a CPU), float32, bfloat16, float16."
    )
    student_max_model_len: int = Field(default=2048, gt=0, description="vLLM context length (prompt + answer).")
    student_gpu_memory_utilization: float = Field(
        default=0.85, gt=0, le=1, description="Share of GPU memory vLLM may take."
    )
    student_max_lora_rank: int = Field(default=16, gt=0, description="Largest adapter rank the engine accepts.")
    student_max_loras: int = Field(
        default=4, gt=0, description="Adapters one engine keeps loaded at once (vLLM max_loras): one per task it "
        "serves, plus one while a new version swaps in. More tasks than this still work, with reloads.")
    student_allow_base_model: bool = Field(
        default=False,
        description="Label with the bare base model while a task has no promoted adapter (normally: wait).",
    )
    student_wait_s: float = Field(
        default=10.0, gt=0, description="How long a student waits before requeueing a task with no adapter."
    )
    student_confidence_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Labels below this mean token probability are escalated (or flagged)."
    )
    student_escalation_share: float = Field(
        default=0.05, ge=0, le=1, description="At most this share of student traffic is escalated to the teacher."
    )
    student_target_precision: float = Field(
        default=0.9, gt=0, le=1,
        description="The trainer calibrates each adapter's confidence threshold on its val split: the lowest one "
        "whose answers at or above it are right this often. Uncalibrated adapters use "
        "LABELQ_STUDENT_CONFIDENCE_THRESHOLD.",
    )
    student_adapter_cache_dir: Path | None = Field(
        default=None, description="Local cache of downloaded adapters (default: <state_dir>/adapter-cache)."
    )
    student_adapters_kept: int = Field(
        default=2, gt=0, description="Adapter versions kept in the local cache per task (older ones are evicted)."
    )
    student_gpu_usd_per_hour: float = Field(
        default=2.0, ge=0, description="What one GPU-hour of a student costs, for the cost ledger."
    )
    curation_seed_size: int = Field(
        default=300, gt=0,
        description="Seed phase: the first this-many sessions of a task go to the teacher, and its first "
        "automatic curated bucket is built when that many teacher labels exist.",
    )
    routing_sample_rate: float = Field(
        default=0.02, ge=0, le=1,
        description="After the seed phase, this share of sessions goes to the teacher (drift, fresh data).",
    )
    sample_secret: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC that picks the teacher sample (16+ characters; every producer must share "
        "it). Unset: 32 random bytes made once per deployment and kept in the store (secrets/sample.key).",
    )
    routing_stratify_by: str | None = Field(
        default=None, description="Field path (e.g. site, user.device) whose values share the seed set fairly."
    )
    # Live quality: shadow labels of the teacher sample, agreement, drift alarm, rollback (labelq.agreement).
    shadow_enabled: bool = Field(
        default=True, description="Steady-phase sessions sampled to the teacher are also labelled by the serving "
        "student as shadow records (not labels), so the two answers are compared live.",
    )
    agreement_window_s: int = Field(
        default=3_600, ge=60, description="Student-teacher agreement is counted per adapter version in windows "
        "of this many seconds.",
    )
    agreement_keep_windows: int = Field(
        default=168, gt=0, description="Windows of agreement counts kept (each expires this many windows after "
        "it starts): the rollback compares with the predecessor's last window still kept.",
    )
    agreement_pair_ttl_s: int = Field(
        default=86_400, gt=0, description="How long a teacher label or a shadow label waits for the other half "
        "of its pair before it is forgotten.",
    )
    agreement_cosine_backlog: int = Field(
        default=10_000, gt=0, description="Pairs waiting for the trainer to embed them (cosine); older ones are "
        "dropped beyond it.",
    )
    drift_min_samples: int = Field(
        default=100, gt=0, description="Pairs a window needs before the drift alarm or the rollback judge it.",
    )
    drift_floor_exact: float = Field(
        default=0.0, ge=0, le=1, description="A task is degraded when its window's exact agreement is below this "
        "(0: not checked; free-text labels rarely match word for word).",
    )
    drift_floor_cosine: float = Field(
        default=0.6, ge=0, le=1, description="A task is degraded when its window's mean cosine is below this "
        "(0: not checked).",
    )
    drift_floor_within: float = Field(
        default=0.9, ge=0, le=1, description="A task is degraded when its window's share of shadow answers within "
        "the output contract is below this (0: not checked).",
    )
    auto_rollback: bool = Field(
        default=True, description="Roll a promoted version back to its predecessor when its live exact agreement "
        "is significantly worse (one-sided two-proportion z-test, LABELQ_ROLLBACK_P_VALUE).",
    )
    rollback_p_value: float = Field(
        default=0.01, gt=0, lt=1, description="The z-test's p-value below which a version counts as worse than "
        "its predecessor.",
    )
    curation_retrain_every: int = Field(
        default=1_000, gt=0, description="New teacher labels that trigger the next automatic curated bucket."
    )
    curation_max_rows: int = Field(
        default=100_000, gt=0,
        description="Most rows a training set holds (human rows are always kept, even beyond it), and most "
        "labels one bucket reads (a larger backlog is read by the next buckets).",
    )
    curation_watermark_lag_s: float = Field(
        default=300.0, ge=0,
        description="A bucket looks this far back before its predecessor's watermark for write-log entries "
        "that landed late (slow writes, clock skew between workers); entries later still are not curated.",
    )
    curation_require_review: bool = Field(
        default=False, description="Curated buckets wait for `labelq review` before the trainer sees them."
    )
    trainer_poll_s: float = Field(default=30.0, gt=0, description="How often the trainer looks for new buckets.")
    trainer_lock_s: int = Field(
        default=120, gt=0,
        description="A bucket's training lock lives this long and is renewed while its trainer works; "
        "a killed trainer's bucket is free again after it.",
    )
    trainer_qlora: bool = Field(
        default=False, description="Train on 4-bit base weights (QLoRA) when a GPU and bitsandbytes are present."
    )
    # Training settings: unset means the default for the kind of base (trainer.lora.BASE_DEFAULTS: the tiny
    # base, or a real pretrained one); set, they apply to every base. Written next to each adapter.
    trainer_learning_rate: float | None = Field(
        default=None, gt=0, description="LoRA learning rate (default: 3e-3 on the tiny base, 1e-3 on a real one).")
    trainer_epochs: int | None = Field(
        default=None, gt=0, description="Passes over the training split (default: 6 tiny, 3 real).")
    trainer_lora_rank: int | None = Field(default=None, gt=0, description="LoRA rank r (default 16).")
    trainer_lora_alpha: int | None = Field(default=None, gt=0, description="LoRA alpha (default 32).")
    trainer_target_modules: list[str] | None = Field(
        default=None, description="Modules that get LoRA layers (default: every attention and MLP projection).")
    trainer_max_tokens: int | None = Field(
        default=None, gt=0, description="Longest training sequence in tokens, prompt and answer (default: 512 "
        "tiny, 1024 real); longer prompts are cut from the front of the session.")
    trainer_batch_size: int | None = Field(
        default=None, gt=0, description="Sequences per optimizer step (default: 16 tiny, 8 real).")
    # Margins against the serving adapter on the new bucket's val split (often ~60-100 rows, where one row is
    # 1-2 points of exact match): a tie within noise promotes the adapter trained on more, newer labels. The
    # floors bound quality absolutely and the live agreement rolls a worse version back.
    promote_margin_exact: float = Field(
        default=0.02, ge=0, description="A new adapter may trail the serving one by this much exact match (and "
        "share within the contract) on the same val split."
    )
    promote_margin_cosine: float = Field(
        default=0.01, ge=0, description="A new adapter may trail the serving one by this much cosine on the "
        "same val split."
    )
    # Floors every version must reach on its val split, the first one too. Set for short labels a teacher
    # phrases consistently (the synthetic world: adapters score 0.9+ exact); lower them for free-text tasks.
    promote_floor_exact: float = Field(
        default=0.3, ge=0, le=1, description="Least exact match (share) a new adapter needs to be promoted.")
    promote_floor_cosine: float = Field(
        default=0.85, ge=0, le=1, description="Least mean cosine similarity a new adapter needs to be promoted.")
    promote_floor_within_contract: float = Field(
        default=0.95, ge=0, le=1,
        description="Least share of answers within the output contract a new adapter needs to be promoted.")
    promote_golden_min_share: float = Field(
        default=0.9, ge=0, le=1,
        description="Least share of the task's golden cases (<spec>.golden.jsonl beside its spec) a new adapter "
        "must pass to be promoted; no golden file, no golden check.")

    # --- operations -------------------------------------------------------------
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Prometheus endpoint port of a worker (unset: no endpoint)."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the metrics endpoint listens on; beyond loopback it needs LABELQ_METRICS_PASSWORD.",
    )
    metrics_user: str = Field(default="prometheus", description="Basic-auth user of the metrics endpoint.")
    metrics_password: SecretStr | None = Field(
        default=None, description="Basic-auth password of the metrics endpoint (unset: no auth, loopback only)."
    )
    metrics_allow_unauthenticated: bool = Field(
        default=False, description="Serve metrics without a password beyond loopback (a trusted network only)."
    )
    flower_basic_auth: SecretStr | None = Field(
        default=None, description="user:password for Flower (`labelq flower` refuses to start without it)."
    )
    flower_port: int = Field(default=5555, ge=1, le=65535, description="Flower's port.")

    # --- logs -----------------------------------------------------------------
    log_level: str = Field(default="INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_format: str = Field(
        default="auto", description="auto (console on a TTY, JSON lines otherwise), json or console."
    )

    @model_validator(mode="after")
    def _memory_waters(self) -> Settings:
        if self.redis_memory_low_water > self.redis_memory_high_water:
            raise ValueError("redis_memory_low_water must not be above redis_memory_high_water "
                             f"({self.redis_memory_low_water} > {self.redis_memory_high_water})")
        return self

    @model_validator(mode="after")
    def _dedupe_buckets(self) -> Settings:
        # A lookup checks every live bucket: keep that a few hundred keys at most.
        if self.dedupe_window_days * 86_400 / self.dedupe_bucket_s > 1_000:
            raise ValueError(f"dedupe_window_days ({self.dedupe_window_days}) spans more than 1,000 buckets of "
                             f"dedupe_bucket_s ({self.dedupe_bucket_s} s): lengthen the buckets")
        return self

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        # Child processes (redis-server, workers) may run from another directory.
        return value.expanduser().resolve()

    @field_validator("teacher_backend")
    @classmethod
    def _check_backend(cls, value: str) -> str:
        if value not in {"openai", "replay"}:
            # 'auto' (replay whenever no key was set) is gone: an empty key must never become replay.
            raise ValueError(f"teacher_backend must be openai or replay, not {value!r} (the replay teacher "
                             "runs only when chosen: LABELQ_TEACHER_BACKEND=replay)")
        return value

    @field_validator("teacher_api_key")
    @classmethod
    def _usable_key(cls, value: SecretStr | None) -> SecretStr | None:
        # compose passes ${OPENAI_API_KEY:-}: an empty or blank key is no key at all.
        if value is None or not value.get_secret_value().strip():
            return None
        return SecretStr(value.get_secret_value().strip())

    @field_validator("teacher_prices")
    @classmethod
    def _merge_prices(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for model, (per_in, per_out) in value.items():
            if not model or per_in < 0 or per_out < 0:
                raise ValueError(f"teacher_prices[{model!r}]: a model name and two prices >= 0 (USD per 1M "
                                 "input and output tokens)")
        return {**DEFAULT_PRICES, **value}  # adding one model's price keeps the rest of the table

    @field_validator("student_backend")
    @classmethod
    def _check_student_backend(cls, value: str) -> str:
        if value not in {"auto", "vllm", "transformers", "openai"}:
            raise ValueError("student_backend must be auto, vllm, transformers or openai")
        return value

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, value: str) -> str:
        if value not in {"auto", "json", "console"}:
            raise ValueError("log_format must be auto, json or console")
        return value

    @field_validator("metrics_password")
    @classmethod
    def _empty_password_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _metrics_not_open(self) -> Settings:
        # Metrics name queues, tasks and models and cost a Redis read per scrape: not for the world.
        if (self.metrics_port is not None and self.metrics_password is None
                and not self.metrics_allow_unauthenticated and not is_loopback(self.metrics_host)):
            raise ValueError(
                f"the metrics endpoint would listen on {self.metrics_host!r} without a password: set "
                "LABELQ_METRICS_PASSWORD (basic auth), or LABELQ_METRICS_HOST=127.0.0.1, or "
                "LABELQ_METRICS_ALLOW_UNAUTHENTICATED=true on a trusted network"
            )
        return self

    @field_validator("sample_secret")
    @classmethod
    def _check_sample_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("LABELQ_SAMPLE_SECRET must be at least 16 characters (or unset: one is made and kept "
                             "in the store)")
        return value

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in {"file", "s3"}:
            raise ValueError("store_url must start with file:// or s3://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, FlatTomlSource(settings_cls))

    # --- derived values -------------------------------------------------------
    @property
    def effective_store_url(self) -> str:
        return self.store_url or f"file://{(self.state_dir / 'store').resolve()}"


class FlatTomlSource(PydanticBaseSettingsSource):
    """Reads ``LABELQ_CONFIG_FILE`` (TOML), flattening tables into ``table_key`` names."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = _CONFIG_FILE.get() or os.environ.get("LABELQ_CONFIG_FILE")
        self._values: dict[str, Any] = load_toml_flat(Path(path)) if path else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


# Settings whose value is a table: in TOML they are written as one ([teacher.prices]), not flattened.
TABLE_SETTINGS = frozenset({"teacher_prices"})


def load_toml_flat(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    flat: dict[str, Any] = {}

    def walk(prefix: str, table: dict[str, Any]) -> None:
        for key, value in table.items():
            name = f"{prefix}_{key}" if prefix else key
            if isinstance(value, dict) and name.replace("-", "_") not in TABLE_SETTINGS:
                walk(name, value)
            else:  # a table-valued setting ([teacher.prices]) keeps its keys as written: model names
                flat[name.replace("-", "_")] = value

    walk("", data)
    known = set(Settings.model_fields)
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown settings {', '.join(unknown)}")
    return flat


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once, at an entry point; raise ConfigError with a readable message."""
    token = _CONFIG_FILE.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    except ConfigError:
        raise
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(f"invalid configuration: {exc}") from exc
    finally:
        _CONFIG_FILE.reset(token)
