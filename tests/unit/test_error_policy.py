"""The one error policy: which failures are poison, which an outage to wait out, which configuration."""

from __future__ import annotations

import pytest
import redis

from labelq.errors import ConfigError, DecodeError, EngineDead, RateLimited, ServiceUnavailable
from labelq.queue.policy import Failure, classify, outage_backoff_s
from labelq.settings import Settings


@pytest.mark.parametrize(("exc", "kind", "on"), [
    (ConfigError("no task spec 'x'"), Failure.CONFIG, "configuration"),
    (ServiceUnavailable("S3 error 500", dependency="store"), Failure.OUTAGE, "store"),
    (redis.ConnectionError("refused"), Failure.OUTAGE, "redis"),
    (redis.ResponseError("OOM command not allowed"), Failure.OUTAGE, "redis"),
    (PermissionError(13, "denied"), Failure.OUTAGE, "store"),
    (EngineDead("engine died"), Failure.OUTAGE, "engine"),
    (RateLimited("slow down"), Failure.OUTAGE, "provider"),
    (DecodeError("bad chunk"), Failure.POISON, ""),
    (ValueError("a bug, or a session the code cannot take"), Failure.POISON, ""),
    # asyncio.TaskGroup wraps what failed inside it: the group is what its worst member is.
    (ExceptionGroup("task group", [NotADirectoryError(20, "not a directory")]), Failure.OUTAGE, "store"),
    (ExceptionGroup("task group", [ValueError("bug"), redis.ConnectionError("down")]), Failure.OUTAGE, "redis"),
    (ExceptionGroup("task group", [ValueError("bug")]), Failure.POISON, ""),
    (ExceptionGroup("task group", [ServiceUnavailable("x"), ConfigError("no spec")]), Failure.CONFIG,
     "configuration"),
])
def test_each_failure_has_one_kind(exc: Exception, kind: Failure, on: str) -> None:
    verdict = classify(exc)
    assert (verdict.kind, verdict.on) == (kind, on)


def test_outage_backoff_doubles_up_to_its_cap() -> None:
    s = Settings(outage_backoff_base_s=1.0, outage_backoff_max_s=10.0)
    assert [outage_backoff_s(s, n) for n in (1, 2, 3, 4, 5, 9)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
