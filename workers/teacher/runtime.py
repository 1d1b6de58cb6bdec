"""What a teacher worker process keeps between chunks: one event loop, one teacher client (with
its pool of HTTP connections) and one async Redis client (with its connection pool).

Building them for every chunk cost a new loop, a TLS/TCP handshake per concurrent request and a
Redis connection per concurrent session, chunk after chunk; kept, a chunk starts at once on warm
connections.

* **Made lazily**, by the first chunk, in the process that runs it: Celery's prefork pool
  forks its children after importing this module, and a loop or a socket made before the fork
  would be shared with the parent. A process that finds runtimes made under another process id
  (it is a fork of their maker) never touches them and makes its own.
* **One per thread**: a chunk runs the loop until its coroutine is done (``run``), so two
  threads never share one. A worker process (solo or prefork pool) runs its chunks in one thread.
* **Tied to the settings** it was made from: different settings (a test, ``labelq teach`` with
  other options) close it and make a new one.
* **Closed** when the worker process exits (``close_all``: Celery's worker shutdown signals, and
  at exit): the client's and Redis's connections are closed, then the loop.

The budget's durable block is not kept here: it is handed back at the end of every chunk
(``Budget.close``), so a worker killed between chunks leaves no unused block counted as spent.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.maint_notifications import MaintNotificationsConfig

from labelq.logging import get_logger
from labelq.redis_server import resolve_redis_url
from labelq.settings import Settings
from workers.teacher.client import TeacherClient, make_client

log = get_logger(__name__)
T = TypeVar("T")


class TeacherRuntime:
    """One thread's event loop, teacher client and async Redis client, reused chunk after chunk."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: TeacherClient = make_client(settings)
        # The Redis pool:
        # * connections: one per request in flight and one per answer being booked (a session books
        #   after it gives its turn back), a few for the chunk; past that, wait for one, not fail;
        # * a socket timeout, like labelq's other Redis clients: a kept connection to a peer that
        #   vanished without closing it (a failed-over host) must not hang a chunk; one idle for a
        #   while is PINGed before use;
        # * maintenance notifications (a managed-Redis feature) off: with them on, redis-py hands
        #   out a connection the server has closed instead of replacing it.
        self.redis: aioredis.Redis = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
            resolve_redis_url(settings), max_connections=2 * settings.teacher_concurrency + 8, timeout=10,
            socket_timeout=10, health_check_interval=30,
            maint_notifications_config=MaintNotificationsConfig(enabled=False)))
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()  # held while a chunk runs the loop, and while closing
        self.usable = True  # False once closed, or once a run was cut off with tasks still pending
        if self.client.is_replay:
            log.warning("teacher_replay", detail="answering with the data set's reference labels, no API calls "
                        "(chosen with LABELQ_TEACHER_BACKEND=replay; openai and a key for a real teacher)")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this runtime's loop until it is done."""
        with self._lock:
            if not self.usable:
                coro.close()
                raise RuntimeError("this teacher runtime is closed")
            task = self.loop.create_task(_after_pending_io(coro))
            try:
                return self.loop.run_until_complete(task)
            finally:
                if not task.done():  # interrupted from outside the loop (KeyboardInterrupt, SystemExit)
                    self.usable = False

    def close(self) -> None:
        """Cancel what is left, close the connections, then the loop (waits for a running chunk)."""
        with self._lock:
            if self.loop.is_closed():
                return
            self.usable = False
            try:
                self.loop.run_until_complete(self._aclose())
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            except Exception as exc:  # closing must never fail a worker's exit
                log.warning("teacher_runtime_close_failed", error=f"{type(exc).__name__}: {exc}"[:200])
            finally:
                self.loop.close()
                log.info("teacher_runtime_closed", pid=os.getpid())

    async def _aclose(self) -> None:
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self.client.aclose()
        finally:
            await self.redis.aclose()


async def _after_pending_io(coro: Coroutine[Any, Any, T]) -> T:
    """``coro``, after one turn of the loop. Between chunks the loop does not run, so a connection
    the server closed meanwhile (Redis restarted) still looks open; one turn reads its end, and the
    pool replaces it when it is next taken instead of failing the chunk on it."""
    await asyncio.sleep(0)
    return await coro


_LOCK = threading.Lock()
_PID = os.getpid()
_RUNTIMES: dict[int, TeacherRuntime] = {}  # thread id -> runtime, all made by process _PID
_INHERITED: list[dict[int, TeacherRuntime]] = []  # a parent's, copied by fork: kept, never used or closed


def _mine() -> dict[int, TeacherRuntime]:
    """This process's runtimes (call with _LOCK held); a fork starts with none."""
    global _PID, _RUNTIMES
    if os.getpid() != _PID:
        _INHERITED.append(_RUNTIMES)  # closing them would close the parent's sockets and loop
        _PID, _RUNTIMES = os.getpid(), {}
    return _RUNTIMES


def runtime_for(settings: Settings) -> TeacherRuntime:
    """The calling thread's runtime for ``settings``, made on first use (see the module docstring)."""
    thread = threading.get_ident()
    with _LOCK:
        current = _mine().get(thread)
    if current is not None and current.usable and (current.settings is settings or current.settings == settings):
        return current
    if current is not None:
        current.close()
    made = TeacherRuntime(settings)
    with _LOCK:
        _mine()[thread] = made
    return made


def close_all() -> None:
    """Close every runtime this process made (a worker process exiting)."""
    with _LOCK:
        mine = _mine()
        runtimes = list(mine.values())
        mine.clear()
    for runtime in runtimes:
        runtime.close()


atexit.register(close_all)  # a solo worker, ``labelq teach``, tests; a prefork child exits without atexit
