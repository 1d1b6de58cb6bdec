"""SIGTERM sets a stop flag (no lock taken in the handler) and ends a wait at once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

from labelq.stopping import StopFlag, stop_on_sigterm


def test_sigterm_sets_the_flag_and_ends_a_wait_early() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_sigterm() as flag:
        assert not flag.is_set()
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
        assert flag.wait(60) is True  # the handler ran in this (waiting) thread, and the wait ended
        assert flag.is_set()
    assert signal.getsignal(signal.SIGTERM) is before  # the process's own handling is back


def test_a_wait_times_out_unset_and_another_process_can_set_it() -> None:
    shared = multiprocessing.get_context("spawn").Event()
    flag = StopFlag(shared)
    assert flag.wait(0.01) is False
    shared.set()
    assert flag.is_set() and flag.wait(60) is True
