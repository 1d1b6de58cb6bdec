"""``labelq audit``: every ingested session is labelled, in flight, or dead-lettered, per task.

    ingested = labelled (teacher + student) + dead-lettered by workers + in flight
    claimed  = enqueued   (per dedupe bucket, hashes in its set = its count; more would be
                           claims never enqueued)

In flight means inside a chunk waiting in the teacher or student queue, or
reserved by a worker and not yet acknowledged (it is redelivered if that
worker dies), or counted out of the dead letters by a redrive and not yet
published (``labelq.redrive``). Counters move once per chunk (``records.commit_chunk``), so a
redelivered chunk does not count twice. A gap is a loss (or, negative, a
double count); audit lists it and exits non-zero.

A producer claims a session (adds its hash to the dedupe set of the current
bucket, ``seen:<task>:<bucket>``) in the same Redis transaction that pushes
its chunk and counts it as ingested and in the bucket's count
(``labelq/lua/enqueue.lua``), so no claim can exist without its chunk. Claims
beyond a bucket's count (made by older producers that were stopped between
claiming and publishing) show as ``claimed_not_enqueued``
(``labelq.dedupe.claims_not_enqueued``): those sessions are lost (a re-ingest
within the dedupe window calls them duplicates) and the audit fails.
"""

from __future__ import annotations

from collections import Counter

import redis

from labelq import keyspace
from labelq.dedupe import claims_not_enqueued
from labelq.keyspace import Stat
from labelq.queue.inspect import in_flight_chunks
from labelq.redis_server import read_int_hash
from labelq.settings import Settings
from labelq.snapshot import AuditReport, TaskBalance
from labelq.status import known_tasks


def in_flight_sessions(settings: Settings, client: redis.Redis) -> Counter[str]:
    counts: Counter[str] = Counter()
    for chunk in in_flight_chunks(settings, client):
        counts[str(chunk.get("task"))] += len(chunk["sessions"])
    return counts


def audit(settings: Settings, client: redis.Redis) -> AuditReport:
    """Per task: the balance and its gap (0 when every session is accounted for)."""
    flying = in_flight_sessions(settings, client)
    tasks = {}
    for task in known_tasks(settings, client):
        stats = read_int_hash(client, keyspace.stats(settings, task))
        labelled = stats.get(Stat.LABELLED_TEACHER, 0) + stats.get(Stat.LABELLED_STUDENT, 0)
        dead = stats.get(Stat.DEAD_TEACHER, 0) + stats.get(Stat.DEAD_STUDENT, 0)
        ingested = stats.get(Stat.INGESTED, 0)
        gap = ingested - labelled - dead - flying[task]
        tasks[task] = TaskBalance(ingested=ingested, labelled=labelled,
                                  labelled_teacher=stats.get(Stat.LABELLED_TEACHER, 0),
                                  labelled_student=stats.get(Stat.LABELLED_STUDENT, 0), dead_lettered=dead,
                                  in_flight=flying[task], gap=gap,
                                  claimed_not_enqueued=claims_not_enqueued(settings, client, task, ingested))
    return AuditReport(ok=all(t.gap == 0 and t.claimed_not_enqueued == 0 for t in tasks.values()), tasks=tasks)
