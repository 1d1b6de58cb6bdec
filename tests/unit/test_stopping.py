"""SIGTERM sets a stop flag (no lock taken in the handler) and ends a wait at once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

from labelq.stopping import StopFlag, exit_on_sigterm, stop_on_sigterm


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


def test_sigterm_in_a_foreground_command_runs_its_cleanup_and_exits_143() -> None:
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(SystemExit) as stopped, exit_on_sigterm():
        try:
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
            time.sleep(60)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # a second one (a supervisor's) does not cut the cleanup short
            cleaned.append(True)  # where the demo stops the workers it started
    assert stopped.value.code == 143 and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before
