"""Run directories written by the release (4bb92de) still load and give the release's outputs.

tests/fixtures/runs/<task>/ holds one tiny run per task, trained by the release's `attnkit train`;
expected.json holds what the release's `predict`, `generate` and `evaluate` printed for them
(README.md there says how both were made). Every test works on a copy of a run in tmp_path
(evaluate writes metrics.json into the run), from the repository root, where the data paths saved
in the runs' config.json and the recorded arguments point.

The `api` tests open the same runs through `attnkit.runs.open_run`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnkit.cli import main

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "tests" / "fixtures" / "runs"
DATA = "tests/fixtures/runs/data"  # relative to ROOT, as in the runs' config.json
EXPECTED = json.loads((RUNS / "expected.json").read_text(encoding="utf-8"))
TASKS = ["classify", "mlm", "recommend", "translate", "lm", "vision"]
NUMBER = re.compile(r"-?\d+\.\d+")

CHECKS = [
    pytest.param(task, index, id=f"{task}-{item['args'][0]}-{index}")
    for task, items in EXPECTED["tasks"].items()
    for index, item in enumerate(items)
]


def _printed(out: str) -> tuple[str, list[float]]:
    """The printed text with its decimal numbers taken out, and those numbers."""
    return NUMBER.sub("#", out), [float(x) for x in NUMBER.findall(out)]


def test_every_task_has_a_fixture_run():
    assert sorted(EXPECTED["tasks"]) == sorted(TASKS)
    for task in TASKS:
        config = json.loads((RUNS / task / "config.json").read_text())
        assert config["task"] == task
        assert (RUNS / task / "model.safetensors").is_file()


# ------------------------------------------------------------------------- (a) the command line


@pytest.mark.parametrize(("task", "index"), CHECKS)
def test_cli_gives_the_release_outputs(task, index, copy_run, capsys):
    recorded = EXPECTED["tasks"][task][index]
    run = copy_run(task)
    capsys.readouterr()
    assert main([str(run) if arg == "RUN" else arg for arg in recorded["args"]]) == 0
    out = capsys.readouterr().out
    if "metrics" in recorded:  # evaluate: the metrics of its last line (earlier lines show speeds)
        assert json.loads(out.strip().splitlines()[-1]) == pytest.approx(recorded["metrics"], rel=1e-5)
    else:  # predict, generate: the same text; the printed probabilities and scores to their 3 decimals
        text, numbers = _printed(out)
        expected_text, expected_numbers = _printed(recorded["stdout"])
        assert text == expected_text
        assert numbers == pytest.approx(expected_numbers, rel=1e-5, abs=1.1e-3)


def test_cli_mlm_run_starts_a_classifier(copy_run, tmp_path):
    """A masked-LM run has no predict or evaluate: `train classify --init` reads its configuration,
    tokenizer and weights. One step at a learning rate of 1e-30 leaves its encoder as loaded."""
    mlm = copy_run("mlm")
    out = tmp_path / "classifier"
    args = ["train", "classify", "--train", f"{DATA}/classify/train.csv", "--init", str(mlm), "--out", str(out)]
    args += ["--max-len", "32", "--max-steps", "1", "--lr", "1e-30", "--batch-size", "8"]
    assert main([*args, "--no-progress", "--threads", "1"]) == 0
    assert (out / "tokenizer.json").read_text() == (mlm / "tokenizer.json").read_text()
    model = json.loads((out / "config.json").read_text())["model"]
    saved = json.loads((mlm / "config.json").read_text())["model"]
    for name in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_len"):
        assert model[name] == saved[name], name
    encoder = {k: v for k, v in load_file(str(mlm / "model.safetensors")).items() if k.startswith("body.")}
    trained = load_file(str(out / "model.safetensors"))
    assert encoder and set(encoder) <= set(trained)
    for name, tensor in encoder.items():
        torch.testing.assert_close(trained[name], tensor, msg=name)


# ------------------------------------------------------------------------- (b) the Python API

API_INPUTS = {
    "classify": ["goal match team striker cup", "stock market shares bank"],
    "mlm": ["the [MASK] won the match", "stock [MASK] shares"],
    "recommend": [["50", "51", "52"], ["34", "35"]],  # histories of item ids, oldest first
    "translate": ["Drei vier.", "Eins zwei acht."],
    "lm": ["to be or ", "that is"],
    "vision": [f"{DATA}/vision/test/vertical/0.png", f"{DATA}/vision/test/horizontal/1.png"],
}


@pytest.mark.parametrize("task", TASKS)
def test_api_open_run_loads_a_release_run_and_predicts(task, copy_run):
    from attnkit.runs import open_run

    run = open_run(copy_run(task), device="cpu")
    assert run.task == task
    assert isinstance(run.model, torch.nn.Module)
    assert not run.model.training
    assert dataclasses.is_dataclass(run.options) and not isinstance(run.options, type)
    inputs = API_INPUTS[task]
    results = run.predict(inputs)
    assert isinstance(results, list)
    assert len(results) == len(inputs)
