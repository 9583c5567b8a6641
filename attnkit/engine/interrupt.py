"""Stopping training cleanly: on Ctrl-C or SIGTERM, finish the step, save `last/`, then stop.

A job scheduler (SLURM, Kubernetes) sends SIGTERM some seconds before it kills a job, and a user
stops a run with Ctrl-C; either way the steps since the last save would be lost. While training,
the first such signal is only noted; the trainer ends the step it is in, saves its state and raises
`Interrupted`, and `--resume` continues from that step exactly. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal after saving its state. The command exits with 128 + `signum`
    (130 for Ctrl-C, 143 for SIGTERM), as a process stopped by that signal would."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class StopRequests:
    """A context in which SIGINT and SIGTERM are noted (`signum`) instead of stopping the program,
    so that a loop can stop between two steps; a second SIGINT raises `KeyboardInterrupt` at once.

    Signal handlers can only be set from the main thread: elsewhere (a notebook's worker thread, a
    test runner's) nothing is installed and `signum` stays None.
    """

    def __init__(self, log: Callable[[str], Any] = print) -> None:
        self.log = log
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now, without saving
        if self.signum is None:
            self.log(
                f"{signal.Signals(signum).name}: stopping after this step and saving it "
                "(Ctrl-C again to stop at once, losing the steps since the last save)"
            )
        self.signum = signum
