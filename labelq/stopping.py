"""Stopping cleanly on SIGTERM (a Kubernetes rolling update, ``docker stop``).

A :class:`StopFlag` is set by a signal handler and read at safe points by
the code it stops (the producer checks it between records and while it
waits for room or for Redis). Setting it takes no lock: a handler runs in
the thread it interrupts, and one that took a lock that thread held (as
``threading.Event.set`` and ``multiprocessing.Event.set`` do) would wait on
itself for ever. Another process can stop it too, through a
``multiprocessing`` event it shares (the producer's range processes).

A foreground command that starts processes of its own (``labelq demo`` runs
its workers in sessions of their own, which a ``kill`` of the demo never
reaches) uses :func:`exit_on_sigterm` instead: SIGTERM raises ``SystemExit``
once, so its cleanup stops them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

_SLICE_S = 0.05  # how soon a wait notices the flag


class SharedEvent(Protocol):
    """A ``multiprocessing`` event (set by another process, read here)."""

    def is_set(self) -> bool: ...


class StopFlag:
    """Set when the process should stop; safe to set from a signal handler."""

    def __init__(self, shared: SharedEvent | None = None) -> None:
        self._set = False
        self._shared = shared

    def set(self) -> None:
        self._set = True  # a plain store: nothing a signal handler can deadlock on

    def is_set(self) -> bool:
        if not self._set and self._shared is not None and self._shared.is_set():
            self._set = True
        return self._set

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; True (early) once the flag is set."""
        deadline = time.monotonic() + timeout_s
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_SLICE_S, left))
        return True


def set_on_sigterm(flag: StopFlag, *, exit_if_orphaned_of: int | None = None) -> None:
    """From now on SIGTERM sets ``flag`` instead of ending the process.

    ``exit_if_orphaned_of``: a parent's pid; a SIGTERM that finds this process no longer its child exits
    at once (``os._exit(0)``). For a worker process its parent would never take a result from, nor send
    more work to: idle, it would wait on a pipe it holds both ends of, for ever. Only for processes whose
    every write is one atomic step (nothing half-done to leave behind)."""
    def on_sigterm(signum: int, frame: object) -> None:
        flag.set()
        if exit_if_orphaned_of is not None and os.getppid() != exit_if_orphaned_of:
            os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)


@contextmanager
def stop_on_sigterm() -> Iterator[StopFlag]:
    """A flag that SIGTERM sets while the block runs (the default action is restored after)."""
    flag = StopFlag()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``SystemExit(143)`` where the main thread is, as Ctrl-C raises
    KeyboardInterrupt: ``finally`` blocks and context managers run, so a foreground command stops what it
    started (the demo's workers) instead of leaving it running. Main thread only."""
    def on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not cut the cleanup short
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
