"""Crash points for the crash-and-resume tests, so that they kill a run at a chosen instant
instead of racing a timer. Armed only by the EDGETUNE_TEST_CRASH environment variable, which
real use never sets:

    step:N        SIGKILL right after training step N of the run (1-based, counted across
                  epochs and resumes), after that step's checkpoint if one was due;
    checkpoint:N  SIGKILL halfway through writing the run's N-th checkpoint (half its bytes are
                  in the temporary file, the previous checkpoint.npz is untouched).
"""
from __future__ import annotations

import os
import signal

ENV = "EDGETUNE_TEST_CRASH"


def armed(where: str) -> bool:
    """True when the crash point `where` is armed in this process."""
    return os.environ.get(ENV, "").partition(":")[0] == where


def crash_point(where: str, count: int) -> None:
    """Kill this process with SIGKILL (no cleanup, like a power cut) when `where:count` is armed."""
    kind, _, n = os.environ.get(ENV, "").partition(":")
    if kind == where and n.strip() == str(count):
        os.kill(os.getpid(), signal.SIGKILL)
