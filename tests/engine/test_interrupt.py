"""Stop requests during training: the first SIGINT or SIGTERM is noted, a second Ctrl-C stops at once,
and the handlers are put back (the whole path through training: tests/engine/test_resume.py)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from attnkit.cli import main
from attnkit.engine.interrupt import Interrupted, StopRequests


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_is_noted_not_raised_and_handlers_are_restored(signum):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    said = []
    with StopRequests(said.append) as stops:
        assert stops.signum is None
        os.kill(os.getpid(), signum)  # delivered to this, the main thread, before kill returns to Python code
        assert stops.signum == signum
        assert said and signal.Signals(signum).name in said[0]
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_second_ctrl_c_stops_at_once():
    with pytest.raises(KeyboardInterrupt), StopRequests(lambda _: None):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)


def test_off_the_main_thread_nothing_is_installed():
    seen = []

    def body():
        with StopRequests() as stops:
            seen.append((stops.signum, dict(stops._previous)))

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [(None, {})]


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_the_command_exits_with_128_plus_the_signal_and_says_what_to_do(monkeypatch, capsys, signum, status):
    def stopped(*_args, **_kwargs):
        raise Interrupted("stopped at step 7 of 9; RUN/last holds it: continue with --resume", signum)

    monkeypatch.setattr("attnkit.cli._dispatch", stopped)
    assert main(["train", "classify"]) == status
    assert "interrupted: stopped at step 7 of 9" in capsys.readouterr().err
