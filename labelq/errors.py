"""One error root for labelq, split into retryable and permanent.

    LabelqError
    ├── Stopped                   asked to stop (SIGTERM): the work in hand is finished or left
    ├── PayloadUnresolved         code read a claim-checked session's payload before resolving it (a bug)
    ├── RetryableError            back off and try again (the cause may go away)
    │   ├── ServiceUnavailable    Redis, the object store or an API cannot be reached
    │   ├── RateLimited           a limiter or the provider said "not now" (retry_after_s)
    │   └── EngineDead            the student's generation engine died: a new one is started
    └── PermanentError            retrying cannot help: dead-letter with the reason
        ├── ConfigError           a setting or a spec is wrong (operator must act)
        ├── InvalidKey            an object-store key would escape its prefix
        ├── ObjectNotFound        the object store has no such key
        ├── DecodeError           a message or record does not match its schema
        ├── RejectedInput         a session failed validation (reason is a short code)
        └── IntegrityError        stored bytes do not match the hash recorded for them

Workers retry ``RetryableError`` and dead-letter ``PermanentError`` with
``reason``; the producer never raises ``RejectedInput`` to the user, it
dead-letters the line and carries on.
"""

from __future__ import annotations


class LabelqError(Exception):
    """Root of every error labelq raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class Stopped(LabelqError):
    """The process was asked to stop (SIGTERM) and left what it had not started for a re-run."""

    reason = "stopped"


class PayloadUnresolved(LabelqError):
    """A claim-checked session's payload was read before its reference was resolved through the store
    (``labelq.payloads.resolve_chunk``): a bug, poison to the error policy."""

    reason = "payload_unresolved"


class RetryableError(LabelqError):
    """The operation may succeed later."""

    reason = "retryable"


class ServiceUnavailable(RetryableError):
    """A backing service (Redis, object store, API) cannot be reached; ``dependency`` names it."""

    reason = "service_unavailable"

    def __init__(self, message: str, *, dependency: str = "service", reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.dependency = dependency


class RateLimited(RetryableError):
    """A limiter or provider asked us to wait ``retry_after_s`` seconds."""

    reason = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineDead(RetryableError):
    """The student's in-process engine died (its worker process was killed, say): the worker drops it,
    puts the chunk back and starts a new engine for the next one."""

    reason = "engine_dead"


class PermanentError(LabelqError):
    """Retrying cannot help; the item goes to the dead-letter store."""

    reason = "permanent"


class ConfigError(PermanentError):
    """A setting, a URL or a task spec is invalid."""

    reason = "config_error"


class InvalidKey(PermanentError):
    """An object-store key is malformed or would escape the store's prefix."""

    reason = "invalid_key"


class ObjectNotFound(PermanentError):
    """The object store holds no object under the key."""

    reason = "not_found"


class DecodeError(PermanentError):
    """A message or record does not match its versioned schema."""

    reason = "decode_error"


class RejectedInput(PermanentError):
    """A session failed validation; ``reason`` is a short machine-readable code."""

    reason = "rejected"


class IntegrityError(PermanentError):
    """Stored bytes do not match the hash recorded for them (an adapter version overwritten or tampered
    with), or a write-once object already holds other bytes."""

    reason = "integrity"
