"""Redis commands per ``labelq status`` and per ``labelq audit`` call on a Redis with a long history.

A private redis-server gets ``history_keys`` keys of per-chunk and per-session history (done markers,
teacher cache entries, escalation decisions, attempt counters) and as many dedupe-set members with the
counters that balance them, for 3 tasks, plus a little work in flight per task (queued, taken by a
worker, parked, in the redrive outbox): ``tests/support/ops_history.py``, shared with
``tests/integration/test_ops_cost.py``. Then one status call and one audit call are counted at the
server (``INFO commandstats``: every command, pipelined or not) and at the client (round trips).

    python bench/_scale_ops.py --json                  # 1M keys (about 12 s on 2 cores)
    python bench/_scale_ops.py --json --keys 100000

``bench/scale.py`` calls :func:`ops_redis_commands`. The goal (issue 15): at most 50 commands per
call, whatever the history.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emit, private_redis
from labelq.audit import audit
from labelq.settings import Settings
from labelq.status import gather
from labelq.store import open_store
from tests.support.ops_history import TASKS, add_work, fill_history, redis_commands


class _CountingConnection(redis.Connection):
    """Counts what it sends: one send per command, or per pipeline (one round trip each)."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)


def _round_trips(call: Callable[[], object]) -> int:
    before = _CountingConnection.sends
    call()
    return _CountingConnection.sends - before


def ops_redis_commands(history_keys: int = 1_000_000) -> dict[str, Any]:
    """Commands and round trips of one ``labelq status`` and one ``labelq audit`` call, for 3 tasks
    on ``history_keys`` keys of history. Keys: ``status_redis_commands``, ``audit_redis_commands``
    (the goal: <= 50 each), ``status_round_trips``, ``audit_round_trips``,
    ``status_first_call_redis_commands`` (the task registry's one-time fill on a Redis from before it:
    a scan, once), ``history_keys``, ``redis_keys``, ``fill_s``, ``tasks``."""
    with private_redis() as url, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(state_dir=Path(tmp) / "state", redis_url=url,  # type: ignore[arg-type]
                            redis_key_prefix="labelq:", store_url=f"file://{Path(tmp) / 'store'}")
        pool = redis.ConnectionPool.from_url(url, connection_class=_CountingConnection)
        client = redis.Redis(connection_pool=pool)
        store = open_store(settings)
        started = time.monotonic()
        add_work(settings, client)
        fill_history(settings, client, history_keys)
        fill_s = time.monotonic() - started
        first = redis_commands(client, lambda: gather(settings, client, store))
        status = redis_commands(client, lambda: gather(settings, client, store))
        audit(settings, client)  # loads its script once per Redis (NOSCRIPT, then the text): not a per-call cost
        audit_commands = redis_commands(client, lambda: audit(settings, client))
        report = audit(settings, client)
        if not report.ok:
            raise RuntimeError(f"the audit does not balance on the synthetic history: {report}")
        return {
            "status_redis_commands": status,
            "audit_redis_commands": audit_commands,
            "status_round_trips": _round_trips(lambda: gather(settings, client, store)),
            "audit_round_trips": _round_trips(lambda: audit(settings, client)),
            "status_first_call_redis_commands": first,
            "history_keys": history_keys,
            "redis_keys": int(client.dbsize()),
            "fill_s": round(fill_s, 1),
            "tasks": len(TASKS),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000, help="History keys (and dedupe members).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object as the last line.")
    args = parser.parse_args()
    emit(ops_redis_commands(args.keys), args.json)


if __name__ == "__main__":
    main()
