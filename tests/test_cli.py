"""The `attnkit` command line: help and argument errors (`attnkit demo` itself needs ~1 GB; not run here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from attnkit.cli import main


def test_help_exits_zero_and_prints_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: attnkit")
    assert "demo" in out


def test_demo_help_does_not_run_the_demo(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "usage: attnkit demo" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["frobnicate"], []], ids=["unknown_command", "no_command"])
def test_bad_command_exits_two(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: attnkit" in err
    assert "error:" in err


def test_python_dash_m_attnkit_help():
    result = subprocess.run(
        [sys.executable, "-m", "attnkit", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: attnkit")
