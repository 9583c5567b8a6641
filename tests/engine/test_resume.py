"""Exact resume: a run killed with SIGKILL mid-epoch and continued with --resume ends with the same
weights, bit for bit, as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from attnkit.data.tokenizer import train_tokenizer
from tests.fixtures import TINY_MODEL, make_texts, write_csv

ROOT = Path(__file__).resolve().parents[2]


def _command(train: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "attnkit",
        "train",
        "classify",
        "--train",
        str(train),
        "--out",
        str(run),
        "--epochs",
        "3",
        "--save-every",
        "1",
        "--eval-every",
        "7",
        "--dropout",
        "0.2",
        "--tokenizer-file",
        str(train.parent / "tokenizer.json"),
        *TINY_MODEL,
        *extra,
    ]


def _step(run: Path) -> int:
    try:
        return json.loads((run / "last" / "state.json").read_text())["position"]["step"]
    except (OSError, ValueError, KeyError):
        return -1


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    train = write_csv(tmp_path / "train.csv", make_texts(480, seed=7))
    # One tokenizer for both runs: HF's trainer breaks frequency ties in a per-process order.
    train_tokenizer([t for t, _ in make_texts(480, seed=7)], vocab_size=200).save(str(tmp_path / "tokenizer.json"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(train, straight), check=True, env=env, capture_output=True)
    total = _step(straight)
    steps_per_epoch = total // 3
    assert steps_per_epoch > 20

    process = subprocess.Popen(_command(train, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = steps_per_epoch + steps_per_epoch // 2  # the middle of the second epoch
    deadline = time.monotonic() + 120
    while _step(killed) < target and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = _step(killed)
    assert process.returncode == -signal.SIGKILL
    assert 0 < stopped_at < total, "the run should have been killed before it finished"

    resumed = subprocess.run(_command(train, killed, "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step" in resumed.stdout
    assert _step(killed) == total

    final_a = load_file(str(straight / "last" / "model.safetensors"))
    final_b = load_file(str(killed / "last" / "model.safetensors"))
    assert final_a.keys() == final_b.keys()
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name
    history_a = (straight / "history.csv").read_text().splitlines()
    history_b = (killed / "history.csv").read_text().splitlines()
    assert [row.split(",")[:4] for row in history_a] == [row.split(",")[:4] for row in history_b]


def test_same_seed_and_tokenizer_give_identical_weights(tmp_path):
    train = write_csv(tmp_path / "train.csv", make_texts(120, seed=7))
    train_tokenizer([t for t, _ in make_texts(120, seed=7)], vocab_size=200).save(str(tmp_path / "tokenizer.json"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("a", "b"):
        subprocess.run(_command(train, tmp_path / name, "--epochs", "1"), check=True, env=env, capture_output=True)
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    from attnkit.cli import main

    assert main(["train", "classify", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_sigterm_saves_the_step_reached_and_resume_matches_uninterrupted(tmp_path):
    """Without --save-every, a run saves only at evaluations (here, each epoch's end): SIGTERM mid-epoch
    (what a job scheduler sends before it kills) must still leave last/ at the step reached, exit with
    143, and resume exactly. Ctrl-C takes the same path (tests/engine/test_interrupt.py)."""
    signum = signal.SIGTERM
    train = write_csv(tmp_path / "train.csv", make_texts(480, seed=7))
    train_tokenizer([t for t, _ in make_texts(480, seed=7)], vocab_size=200).save(str(tmp_path / "tokenizer.json"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    plain = ["--save-every", "0", "--eval-every", "0"]
    subprocess.run(_command(train, straight, *plain), check=True, env=env, capture_output=True)
    total = _step(straight)
    steps_per_epoch = total // 3

    process = subprocess.Popen(
        _command(train, stopped, *plain), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while _step(stopped) < steps_per_epoch and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signum)  # somewhere in the second epoch, where nothing else saves
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    stopped_at = _step(stopped)
    assert steps_per_epoch < stopped_at < total
    assert f"stopped at step {stopped_at} of {total}" in err and "--resume" in err

    resumed = subprocess.run(_command(train, stopped, *plain, "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {stopped_at}" in resumed.stdout
    final_a = load_file(str(straight / "last" / "model.safetensors"))
    final_b = load_file(str(stopped / "last" / "model.safetensors"))
    assert [name for name in final_a if not torch.equal(final_a[name], final_b[name])] == []
