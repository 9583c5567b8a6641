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


def test_an_out_that_cannot_be_created_is_one_line_and_exit_2(tmp_path, capsys):
    from tests.fixtures import TINY_MODEL, make_texts, write_csv

    train = write_csv(tmp_path / "train.csv", make_texts(60, seed=1))
    blocked = tmp_path / "a-file" / "run"  # a folder inside a file cannot be made
    (tmp_path / "a-file").write_text("")
    assert main(["train", "classify", "--train", str(train), "--out", str(blocked), "--epochs", "1", *TINY_MODEL]) == 2
    assert f"error: --out {blocked}: cannot create it (Not a directory)" in capsys.readouterr().err


def test_a_file_system_error_on_a_path_is_one_line_and_others_keep_their_traceback(monkeypatch, capsys):
    def denied(*_args):
        raise PermissionError(13, "Permission denied", "/srv/runs/r8/model.safetensors")

    monkeypatch.setattr("attnkit.cli._dispatch", denied)
    assert main(["train", "classify"]) == 2
    assert capsys.readouterr().err == "error: /srv/runs/r8/model.safetensors: Permission denied\n"

    def broken(*_args):
        raise OSError("a failure that names no file")

    monkeypatch.setattr("attnkit.cli._dispatch", broken)
    with pytest.raises(OSError, match="names no file"):
        main(["train", "classify"])


def test_a_run_being_trained_refuses_a_second_training_and_a_failed_start_leaves_no_folder(tmp_path, capsys):
    import fcntl

    from tests.fixtures import TINY_MODEL, make_texts, write_csv

    train = write_csv(tmp_path / "train.csv", make_texts(60, seed=1))
    run = tmp_path / "run"
    assert main(["train", "classify", "--train", str(train), "--out", str(run), "--epochs", "1", *TINY_MODEL]) == 0
    written = lambda: {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"}  # noqa: E731
    files = written()
    with open(run / ".lock", "w") as held:  # what a training process holds for its whole run
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        for extra in (["--train", str(train)], ["--resume"]):
            assert main(["train", "classify", "--out", str(run), *extra, *TINY_MODEL]) == 2
            assert f"{run} is being trained by another process (pid 4242)" in capsys.readouterr().err
    assert written() == files  # nothing of the refused runs was written

    missing = tmp_path / "new-run"
    assert main(["train", "classify", "--train", str(tmp_path / "none.csv"), "--out", str(missing), *TINY_MODEL]) == 2
    assert not missing.exists()
