"""``labelq audit``: every ingested session is labelled, in flight, or dead-lettered, per task.

    ingested = labelled (teacher + student) + dead-lettered by workers + in flight
    claimed  = enqueued   (per dedupe bucket, hashes in its set = its count; more would be
                           claims never enqueued)

In flight means inside a chunk waiting in the teacher or student queue,
parked off the student queue until its task has an adapter
(``labelq.queue.parking``), reserved by a worker and not yet acknowledged (it
is redelivered if that worker dies), or counted out of the dead letters by a
redrive and not yet published (``labelq.redrive``). It is counted in those
messages themselves (``labelq.queue.inspect.in_flight_counts``), never in a
counter the scripts that move them keep, so the audit stays an independent
check of those scripts. Counters move once per chunk (``records.commit_chunk``), so a
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

Its cost does not grow with history: the tasks come from the task registry
(no keyspace scan), the queues are read in pages (memory: one page), and
everything else is a few commands per task.
"""

from __future__ import annotations

import redis

from labelq import keyspace
from labelq.dedupe import claims_not_enqueued
from labelq.keyspace import Stat
from labelq.queue.inspect import in_flight_counts
from labelq.settings import Settings
from labelq.snapshot import AuditReport, TaskBalance
from labelq.task_registry import known_tasks

_COUNTED = (Stat.INGESTED, Stat.LABELLED_TEACHER, Stat.LABELLED_STUDENT, Stat.DEAD_TEACHER, Stat.DEAD_STUDENT)


def audit(settings: Settings, client: redis.Redis) -> AuditReport:
    """Per task: the balance and its gap (0 when every session is accounted for)."""
    names = known_tasks(settings, client)
    flying = in_flight_counts(settings, client, names)  # before the counters: a chunk done meanwhile is counted
    with client.pipeline(transaction=False) as pipe:
        for task in names:
            pipe.hmget(keyspace.stats(settings, task), _COUNTED)
        replies = iter(pipe.execute())
    tasks = {}
    for task in names:
        ingested, teacher, student, dead_teacher, dead_student = (int(v or 0) for v in next(replies))
        labelled, dead, in_flight = teacher + student, dead_teacher + dead_student, flying.get(task, 0)
        tasks[task] = TaskBalance(ingested=ingested, labelled=labelled, labelled_teacher=teacher,
                                  labelled_student=student, dead_lettered=dead, in_flight=in_flight,
                                  gap=ingested - labelled - dead - in_flight,
                                  claimed_not_enqueued=claims_not_enqueued(settings, client, task, ingested))
    return AuditReport(ok=all(t.gap == 0 and t.claimed_not_enqueued == 0 for t in tasks.values()), tasks=tasks)
