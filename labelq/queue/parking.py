"""Chunks that cannot be served yet wait outside their queue, so autoscaling follows work that can be done.

KEDA scales the student workers on the length of the ``student`` list. A
student chunk whose task has no adapter yet can only wait; left on the queue it
would cycle through the workers and keep GPU pods running that do nothing. So
the worker *parks* it (:func:`park`): in one Redis step the message leaves
kombu's unacknowledged hash for the task's parked list
(``keyspace.parked``), which no worker consumes and KEDA does not count. The
worker's acknowledgement that follows finds nothing left to remove.

A parked chunk goes back to the front of its queue (:func:`unpark`) when its
task can be served: the adapter registry unparks a task whenever it promotes,
rolls back, pins or restores a pointer (``labelq.registry``), and a sweep
(``labelq.registry.release_parked``: the trainer's loop, a student worker's
start) unparks every task that can be served, so nothing is stranded by a crash
between a promotion and its unpark. :func:`park` itself refuses when the task
can already be served (the pointer keys are checked in the same step), so a
promotion landing while a worker parks cannot strand a chunk either.

Parked chunks are in flight for ``labelq audit`` (``labelq.queue.inspect``) and
shown by ``labelq status`` and the metrics (``labelq_parked_chunks{task}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum

import orjson
import redis

from labelq import keyspace, lua
from labelq.settings import Settings

PARKED_QUEUES = ("student",)  # the queues whose chunks may be parked
UNPARK_BATCH = 500  # messages moved per Lua call: Redis never blocks long, whatever was parked


class Parked(Enum):
    PARKED = 1
    SERVABLE = 2  # one of the keys it waits for exists: serve it now
    NOT_HELD = 0  # the message is not unacknowledged (kombu restored it meanwhile): nothing moved


def park(settings: Settings, client: redis.Redis, queue: str, task: str, delivery_tag: str,
         until_any: Sequence[str]) -> Parked:
    """Move the unacknowledged message ``delivery_tag`` of ``queue`` to ``task``'s parked list, unless
    one of the keys ``until_any`` exists (then the chunk can be served now)."""
    entry = client.hget(keyspace.unacked(settings), delivery_tag)
    if entry is None:
        return Parked.NOT_HELD
    message = orjson.loads(entry)[0]  # kombu's entry: [message, exchange, routing key]
    keys = [keyspace.unacked(settings), keyspace.unacked_index(settings), keyspace.parked(settings, queue, task),
            *until_any]
    return Parked(int(lua.script(client, "park")(keys=keys, args=[delivery_tag, orjson.dumps(message)])))


def unpark(settings: Settings, client: redis.Redis, queue: str, task: str) -> int:
    """Move every parked chunk of ``task`` back to the front of ``queue``, oldest first; how many moved."""
    script = lua.script(client, "unpark")
    keys = [keyspace.parked(settings, queue, task), keyspace.queue(settings, queue)]
    total = 0
    while moved := int(script(keys=keys, args=[UNPARK_BATCH])):
        total += moved
    return total


def parked_depths(settings: Settings, client: redis.Redis, tasks: Iterable[str],
                  queues: Sequence[str] = PARKED_QUEUES) -> dict[str, int]:
    """Chunks parked per task (all parked queues together), in one round trip; tasks with none left out."""
    names = list(tasks)
    with client.pipeline(transaction=False) as pipe:
        for task in names:
            for queue in queues:
                pipe.llen(keyspace.parked(settings, queue, task))
        depths = pipe.execute()
    found: dict[str, int] = {}
    for i, task in enumerate(names):
        n = sum(int(d) for d in depths[i * len(queues):(i + 1) * len(queues)])
        if n:
            found[task] = n
    return found
