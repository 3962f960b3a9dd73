"""Preemption: SIGTERM / SIGINT (what SLURM, torchrun and Ctrl-C send) stop a run at the next safe point.

The handler only records the signal. Training loops look at it after every optimiser step, write a checkpoint
at that step and raise `Preempted`; the search looks after every scored candidate (its log is its checkpoint).
Under torchrun every rank gets the signal, but not necessarily before the same step, so the ranks agree
through the all-reduce each step already does (`agreed`): all stop after the same step and none waits on a
collective the others left. A repeat within `REPEAT_S` seconds is ignored (Ctrl-C reaches a harness and its
workers, and the harness passes signals on to them); a later one acts at once (the default behaviour).
"""

from __future__ import annotations

import signal
import threading
import time

import torch

from ennas.core import distributed as dist

_received: int | None = None  # the signal number asked for, if any
_since = 0.0  # when it came
REPEAT_S = 5.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal after saving its state; rerunning the same command resumes it."""

    def __init__(self, signum: int, where: str) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} {where}; rerun the same command to resume")


def _handle(signum: int, frame) -> None:
    global _received, _since
    if _received is None:
        _received, _since = signum, time.monotonic()
    elif time.monotonic() - _since > REPEAT_S:  # asked again, later: stop now
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        signal.raise_signal(signum)


def install() -> None:
    """Catch SIGTERM and SIGINT in this process (only the main thread may install handlers)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handle)


def reset() -> None:
    """Forget a received signal (a run in the same process starts clean) and restore default handlers."""
    global _received
    _received = None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def received() -> int | None:
    """The signal this process received (None if none); not agreed across ranks."""
    return _received


def flag() -> float:
    """1.0 if this rank received a stop signal, for folding into a per-step all-reduce."""
    return 1.0 if _received is not None else 0.0


def agreed(local: float | None = None) -> bool:
    """Whether any rank received a signal; `local` is the flag already summed over ranks by the caller's own
    all-reduce (None: do one all-reduce here)."""
    if local is None:
        local = float(dist.all_sum(torch.tensor([flag()], dtype=torch.float64))[0])
    return local > 0


def check(where: str) -> None:
    """Raise Preempted if any rank received a signal (a collective: every rank calls it at the same point)."""
    if agreed():
        raise Preempted(_received or signal.SIGTERM, where)
