"""Putting sessions back on a queue from a worker (unfinished work, escalations).

These sessions were claimed when they were ingested, so they bypass the
dedupe claim; the new chunk's id is derived from its content like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import redis
from celery import Celery

from labelq.hashing import chunk_id
from labelq.queue.publish import ChunkPublisher, OutgoingChunk
from labelq.schemas import ChunkMessage, SessionItem, chunk_json
from labelq.settings import Settings


def republish(settings: Settings, app: Celery, client: redis.Redis, queue: str,
              source: ChunkMessage, items: Sequence[SessionItem], route: str | None = None) -> None:
    route = route or source.route
    with ChunkPublisher(settings, app, client) as publisher:
        outgoing = []
        for start in range(0, len(items), settings.chunk_size):
            part = items[start:start + settings.chunk_size]
            triples = [(s.session_id, s.content_hash, orjson.dumps(s.payload)) for s in part]
            cid = chunk_id(source.task, (s.content_hash for s in part))
            outgoing.append((queue, OutgoingChunk(cid, source.task, len(part),
                                                  chunk_json(source.task, route, triples, cid))))
        publisher.publish_many(outgoing)
