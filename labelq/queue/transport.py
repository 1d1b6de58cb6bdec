"""kombu's Redis transport, made to keep consuming a Redis at its memory ceiling.

Celery uses it through ``broker_transport`` (:func:`labelq.queue.app.celery_config`);
it reads the same URLs as kombu's. Redis runs with ``maxmemory`` and
``noeviction`` (``labelq.redis_memory``): at the ceiling it refuses writes
that may add memory and still serves pops and deletes. Stock kombu does not
survive that; the changes are in the QoS (the unacked bookkeeping of each
consuming channel):

* ``restore_visible`` (put back messages unacked for longer than the
  visibility timeout; run as the worker starts, then every few seconds) takes
  a lock with ``SET``: a full Redis refuses it, and stock kombu lets that
  ``OutOfMemoryError`` kill the worker as it starts. Here the refusal frees the
  memory reserve and skips this sweep (the next one restores). Each sweep also
  keeps the reserve (:func:`labelq.redis_memory.keep_reserve`): freed at the
  ceiling, held again below the low water.
* ``append`` (record a message just popped as unacked): a refusal would lose
  the message, which has left its list already. Here it frees the reserve and
  retries, and keeps retrying (holding the message, logging) until Redis takes
  it: waiting out the outage, not dropping the message.
* ``can_consume``: a worker pops nothing while Redis is at its ceiling with no
  reserve left to free (looked at once a second at most), so ``append`` is
  seldom refused at all.

In the channel: a worker starting at the ceiling cannot rewrite its queue's
binding (``SADD``, refused); the one written before serves (kombu routes
labelq's messages by queue name). And in the channel's client: kombu batches commands in ``MULTI`` where it needs
no atomicity (acks, the unacked record, queue sizes and bindings at start), and
at its ceiling Redis 7 refuses every command queued in a ``MULTI``, the
deletes of an ack included. Here ``pipeline()`` batches without ``MULTI``;
kombu's one real transaction (``WATCH``, restoring a message) still asks for it.
"""

from __future__ import annotations

import functools
import time
from functools import cached_property
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from labelq.logging import get_logger
from labelq.redis_memory import ReservePolicy, keep_reserve, release_reserve

log = get_logger(__name__)

# Transport options (broker_transport_options) the QoS reads: where the reserve is, how large, when to hold it.
RESERVE_KEY = "labelq_memory_reserve_key"
RESERVE_SHARE = "labelq_memory_reserve_share"
RESERVE_LOW_WATER = "labelq_memory_low_water"
MEMORY_LOOK_EVERY_S = 1.0
APPEND_RETRY_S = 1
_REFUSED = (redis.exceptions.OutOfMemoryError, redis.exceptions.ExecAbortError)


class QoS(kombu_redis.QoS):
    _memory_looked_at = 0.0
    _at_ceiling = False

    @cached_property
    def _client(self) -> redis.Redis:
        """A client on the channel's pool without kombu's key prefix (labelq's keys carry theirs)."""
        return redis.Redis(connection_pool=self.channel.pool)

    @cached_property
    def _policy(self) -> ReservePolicy | None:
        options = self.channel.connection.client.transport_options
        if not options.get(RESERVE_KEY):
            return None
        return ReservePolicy(options[RESERVE_KEY], float(options.get(RESERVE_SHARE, 0.0)),
                             float(options.get(RESERVE_LOW_WATER, 1.0)))

    def _release_reserve(self, why: str) -> bool:
        if self._policy is None:
            return False
        try:
            return release_reserve(self._client, self._policy.key, why)
        except redis.RedisError:
            return False

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        try:
            super().restore_visible(start, num, interval)
        except _REFUSED as exc:
            released = self._release_reserve("restoring unacked messages")
            log.warning("restore_refused_out_of_memory", error=type(exc).__name__, reserve_released=released,
                        detail="Redis is at its maxmemory: unacked messages are restored at the next sweep")
        self._look_at_memory()

    def _look_at_memory(self) -> None:
        """Keep the reserve, and note whether Redis is at its ceiling with none left to free."""
        self._memory_looked_at = time.monotonic()
        if self._policy is None:
            return
        try:
            memory = keep_reserve(self._client, self._policy)
        except redis.RedisError:  # unreachable: kombu's reconnection deals with that
            self._at_ceiling = False
            return
        if memory.full != self._at_ceiling:
            if memory.full:
                log.warning("consuming_paused_redis_full", used_bytes=memory.used_bytes, max_bytes=memory.max_bytes,
                            detail="Redis is at its maxmemory with no reserve left: taking no message until it "
                                   "has room (a message taken could not be recorded as unacked)")
            else:
                log.info("consuming_resumed", used_bytes=memory.used_bytes, max_bytes=memory.max_bytes)
        self._at_ceiling = memory.full

    def can_consume(self) -> bool:
        if not super().can_consume():
            return False
        if time.monotonic() - self._memory_looked_at >= MEMORY_LOOK_EVERY_S:
            self._look_at_memory()
        return not self._at_ceiling

    def append(self, message: Any, delivery_tag: Any) -> None:
        refused, waited_s = False, 0
        while True:
            try:
                super().append(message, delivery_tag)
                if waited_s:
                    log.info("unacked_write_accepted", waited_s=waited_s)
                return
            except _REFUSED:
                if not refused and self._release_reserve("recording a message as unacked"):
                    refused = True
                    continue  # at once: the reserve just made room
                refused = True
                if waited_s % 30 == 0:
                    log.error("unacked_write_refused", waited_s=waited_s,
                              detail="Redis is at its maxmemory: holding the message just taken until Redis "
                                     "has room to record it as unacked")
                time.sleep(APPEND_RETRY_S)
                waited_s += APPEND_RETRY_S


class _BatchingClient(redis.Redis):
    """``pipeline()`` batches without MULTI unless asked (``transaction()`` still asks)."""

    def pipeline(self, transaction: bool = False, shard_hint: Any = None) -> Any:
        return super().pipeline(transaction, shard_hint)


class _PrefixedBatchingClient(kombu_redis.PrefixedStrictRedis):
    def pipeline(self, transaction: bool = False, shard_hint: Any = None) -> Any:
        return super().pipeline(transaction, shard_hint)


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        try:
            super()._queue_bind(exchange, routing_key, pattern, queue)
        except _REFUSED:  # rewritten as each worker starts: the binding written before serves meanwhile
            log.warning("queue_bind_refused_out_of_memory", queue=queue,
                        detail="Redis is at its maxmemory: the queue's binding was not rewritten")

    def _get_client(self) -> Any:
        super()._get_client()  # kombu's check of the redis-py version
        if self.global_keyprefix:
            return functools.partial(_PrefixedBatchingClient, global_keyprefix=self.global_keyprefix)
        return _BatchingClient


class Transport(kombu_redis.Transport):
    Channel = Channel

