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

from attnkit.errors import UserError
from attnkit.tasks.base import Run
from attnkit.tasks.registry import MODULES, get_task
from attnkit.tasks.rundir import read_config

__all__ = ["Run", "open_run", "run_task"]


def run_task(run_dir: str | Path) -> str:
    """The task of the run in `run_dir`, read from its config.json (checked to be a known task)."""
    path, config = read_config(run_dir)
    task = config["task"]
    if not isinstance(task, str) or task not in MODULES:
        raise UserError(f"{path / 'config.json'}: unknown task {task!r} (known: {', '.join(MODULES)})")
    return task


def open_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """The run in `run_dir` as its task's run object, its model loaded (safetensors) on `device`.

    config.json is checked (a known task; options rebuilt as the task's typed options, where fields
    missing in older runs take the values their behaviour had and unknown fields are an error), the
    weights must fit the model it describes, and `device` must exist.
    """
    path, config = read_config(run_dir)
    task = run_task(path)
    device = _device(device)
    for key in ("options", "model"):
        if not isinstance(config.get(key), dict):
            raise UserError(f"{path / 'config.json'}: missing or malformed {key!r}")
    return get_task(task).run_class.open(path, config, device)


def _device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"--device: {device!r} is not a device (cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device: {device} is not supported (cpu or cuda)")
    return device
