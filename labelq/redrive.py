"""``labelq deadletter redrive``: dead-lettered sessions back through the pipeline, once each.

A worker's dead letter keeps its session (``DeadLetter.payload``). Redrive
puts those sessions back on the queue of the stage that dead-lettered them
(teacher letters on the teacher queue, student letters on the student queue)
as new chunks with route ``redrive`` (a large session checked in to the store
again and sent by reference, as the producer does: :mod:`labelq.payloads`),
without the producer's dedupe claim:
the sessions were claimed when they were ingested, so a re-ingest within the
dedupe window (``dedupe_window_days``) still calls them duplicates, and only
redrive sends exactly these sessions again.

Once per letter, in three steps:

1. one Lua step (``lua/redrive.lua``) marks the chunk's letters redriven (a
   Redis set of letter ids), takes them out of the dead-letter counts
   (``dlq:reasons``, ``dlq:task:<task>``, ``dead_<stage>`` in ``stats:<task>``)
   and puts the chunk in an outbox. A letter another run marked first is
   dropped and the chunk rebuilt without it, so two redrives at once never
   send a session twice;
2. the chunk is published (after backpressure, like the producer's);
3. it leaves the outbox.

From step 1 to step 3 the audit counts the chunk as in flight
(``queue.inspect.in_flight_counts``), so ``ingested = labelled +
dead-lettered + in flight`` holds at every moment. A run that dies in between
leaves the chunk in the outbox; the next redrive publishes it first, under the
same chunk id (a chunk published twice is labelled and counted once). Once
labelled, the session counts as labelled; if it fails again, its new letter
counts as dead and can be redriven in turn.

Refused: ingest rejects (bad input: fix the source and ingest it again) and
letters that kept no session (undecodable messages, letters written before
redrive existed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import redis

from labelq import keyspace, lua
from labelq.deadletter import LetterFilter, StoredLetter, read_letters
from labelq.hashing import chunk_id
from labelq.logging import get_logger
from labelq.payloads import wire_part
from labelq.queue.app import QueueApp, create_app
from labelq.queue.publish import ChunkPublisher, OutgoingChunk
from labelq.redis_server import resolve_redis_url
from labelq.schemas import chunk_wire
from labelq.settings import Settings
from labelq.store import ObjectStore

log = get_logger(__name__)
ROUTE = "redrive"


@dataclass
class RedriveSummary:
    matched: int = 0  # letters the filters selected
    redriven: int = 0  # sent back by this run (with --dry-run: would be)
    already_redriven: int = 0  # sent back by an earlier run: skipped
    refused: dict[str, int] = field(default_factory=dict)  # why not -> letters
    chunks: dict[str, int] = field(default_factory=dict)  # queue -> chunks published
    resumed_chunks: int = 0  # left in the outbox by an interrupted run, published first (would be)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Batch:
    queue: str
    task: str
    letters: list[StoredLetter]


def _batches(letters: Sequence[StoredLetter], size: int) -> Iterator[_Batch]:
    """Letters grouped by queue and task, in chunks of at most ``size``."""
    groups: dict[tuple[str, str], list[StoredLetter]] = {}
    for s in letters:
        groups.setdefault((s.letter.stage, str(s.letter.task)), []).append(s)
    for (queue, task), group in groups.items():
        for start in range(0, len(group), size):
            yield _Batch(queue, task, group[start:start + size])


def _chunk(settings: Settings, store: ObjectStore, batch: _Batch) -> dict[str, Any]:
    """The batch as a chunk message (wire dict), its id derived from its letters' ids; a large payload is
    written to the store first and referenced (:func:`labelq.payloads.wire_part`)."""
    sessions = [(str(s.letter.session_id), str(s.letter.content_hash),
                 wire_part(settings, store, batch.task, str(s.letter.content_hash), s.letter.payload or {}))
                for s in batch.letters]
    wire = chunk_wire(batch.task, ROUTE, sessions)
    wire["chunk_id"] = chunk_id(batch.task, (h for _, h, _ in sessions),
                                parent=ROUTE + ":" + ",".join(s.id for s in batch.letters))
    return wire


def _uncount_args(settings: Settings, batch: _Batch) -> list[str | int]:
    """Counter triples (key, field, -n) that take the batch's letters out of the dead-letter counts."""
    args: list[str | int] = [keyspace.stats(settings, batch.task), keyspace.dead_stat(batch.queue),
                             -len(batch.letters)]
    for reason, n in Counter(s.letter.reason for s in batch.letters).items():
        args += [keyspace.dlq_reasons(settings), reason, -n, keyspace.dlq_task(settings, batch.task), reason, -n]
    return args


def _publish(client: redis.Redis, settings: Settings, publisher: ChunkPublisher, queue: str,
             chunk: dict[str, Any]) -> None:
    """Publish an outboxed chunk, then take it out of the outbox."""
    outgoing = OutgoingChunk(chunk["chunk_id"], chunk["task"], len(chunk["sessions"]), orjson.dumps(chunk))
    publisher.publish_many([(queue, outgoing)])
    client.hdel(keyspace.redrive_outbox(settings), chunk["chunk_id"])


def flush_outbox(settings: Settings, client: redis.Redis, publisher: ChunkPublisher) -> int:
    """Publish the chunks an interrupted redrive left in the outbox; how many there were."""
    entries: dict[bytes, bytes] = client.hgetall(keyspace.redrive_outbox(settings))  # type: ignore[assignment]
    for raw in entries.values():
        entry = orjson.loads(raw)
        _publish(client, settings, publisher, entry["queue"], entry["chunk"])
    if entries:
        log.warning("redrive_outbox_resumed", chunks=len(entries))
    return len(entries)


def _send(settings: Settings, store: ObjectStore, client: redis.Redis, publisher: ChunkPublisher,
          batch: _Batch) -> tuple[int, int]:
    """Count the batch out of the dead letters and publish it: ``(sent, redriven before)``."""
    script = lua.script(client, "redrive")
    keys = [keyspace.dlq_redriven(settings), keyspace.redrive_outbox(settings), keyspace.task_registry(settings)]
    before = 0
    while batch.letters:
        chunk = _chunk(settings, store, batch)
        ids = [s.id for s in batch.letters]
        entry = orjson.dumps({"queue": batch.queue, "chunk": chunk})
        taken = [x.decode() if isinstance(x, bytes) else str(x) for x in script(
            keys=keys, args=[chunk["chunk_id"], entry, batch.task, len(ids), *ids, *_uncount_args(settings, batch)])]
        if not taken:
            _publish(client, settings, publisher, batch.queue, chunk)
            return len(ids), before
        before += len(taken)  # another run was faster for these: the rest goes without them
        batch = _Batch(batch.queue, batch.task, [s for s in batch.letters if s.id not in set(taken)])
    return 0, before


def redrive(settings: Settings, store: ObjectStore, client: redis.Redis, where: LetterFilter, *,
            app: QueueApp | None = None, dry_run: bool = False, limit: int | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> RedriveSummary:
    """Send the redrivable letters ``where`` selects (the newest ``limit``) back to their stage's queue."""
    letters = read_letters(store, client, settings, where)
    summary = RedriveSummary(matched=len(letters), dry_run=dry_run)
    todo: list[StoredLetter] = []
    for s in letters:
        if s.redriven:
            summary.already_redriven += 1
        elif s.refused is not None:
            summary.refused[s.refused] = summary.refused.get(s.refused, 0) + 1
        else:
            todo.append(s)
    if limit is not None:
        todo = todo[:limit]
    batches = list(_batches(todo, settings.chunk_size))
    if dry_run:
        summary.redriven = len(todo)
        summary.chunks = dict(Counter(b.queue for b in batches))
        summary.resumed_chunks = int(client.hlen(keyspace.redrive_outbox(settings)))
        return summary
    app = app or create_app(settings, broker_url=resolve_redis_url(settings))
    chunks: Counter[str] = Counter()
    handled = 0
    with ChunkPublisher(settings, app, client) as publisher:
        summary.resumed_chunks = flush_outbox(settings, client, publisher)
        for batch in batches:
            sent, before = _send(settings, store, client, publisher, batch)
            summary.redriven += sent
            summary.already_redriven += before
            if sent:
                chunks[batch.queue] += 1
            handled += len(batch.letters)
            if on_progress is not None:
                on_progress(handled, len(todo))
    summary.chunks = dict(chunks)
    log.info("redrive_done", **{k: v for k, v in summary.to_dict().items() if k != "refused"})
    return summary
