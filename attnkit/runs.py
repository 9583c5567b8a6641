"""Open a trained run of any task: `open_run(run_dir, device)` returns the task's `Run`.

from attnkit.runs import open_run
run = open_run("runs/r8")                 # a ClassifierRun
run.predict(["oil prices rose"])          # [[("crude", 0.93)]]
batch = run.encode(["oil prices rose"])   # {"ids": (1, L)} on run.device
logits = run.forward(batch)               # (1, C)
"""

from __future__ import annotations

from pathlib import Path

import torch

from attnkit.engine.distributed import parse_device
from attnkit.errors import UserError
from attnkit.precision import check_precision
from attnkit.tasks.base import Run
from attnkit.tasks.registry import MODULES, get_task
from attnkit.tasks.rundir import read_config

__all__ = ["Run", "open_run", "run_task"]


def run_task(run_dir: str | Path) -> str:
    """The task of the run in `run_dir`, read from its config.json (checked to be a known task)."""
    return _known_task(*read_config(run_dir))


def _known_task(path: Path, config: dict) -> str:
    task = config["task"]
    if not isinstance(task, str) or task not in MODULES:
        raise UserError(f"{path / 'config.json'}: unknown task {task!r} (known: {', '.join(MODULES)})")
    return task


def open_run(run_dir: str | Path, device: str | torch.device = "cpu", precision: str = "fp32") -> Run:
    """The run in `run_dir` as its task's run object, its model loaded (safetensors) on `device`
    at `precision`: "fp32", "bf16" or "int8" (CPU only; `attnkit.precision`).

    config.json is checked (a known task; options rebuilt as the task's typed options, where fields
    missing in older runs take the values their behaviour had and unknown fields are an error), the
    weights must fit the model it describes, and `device` must exist.
    """
    path, config = read_config(run_dir)
    task = _known_task(path, config)
    device = parse_device(device)
    check_precision(precision, device)  # before the weights are read
    for key in ("options", "model"):
        if not isinstance(config.get(key), dict):
            raise UserError(f"{path / 'config.json'}: missing or malformed {key!r}")
    return get_task(task).run_class.open(path, config, device, precision)
