"""What every task declares (`TaskSpec`) and what every trained run offers (`Run`).

A task is one entry of the registry (`attnkit.tasks.registry`): its name, options, training
defaults, `train` entry point, run class and the commands it supports, each with its own flags.
The command line loops over the registry, so adding a task touches only its own module.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attnkit.engine import load_weights
from attnkit.errors import UserError
from attnkit.tasks.rundir import saved_options


class Run:
    """A trained run of one task, opened from its directory: the model and what it needs to be used.

    Open one with `attnkit.runs.open_run(run_dir, device)`. Every task's run offers:

    Attributes:
        task: the task's name ("classify", "translate", ...).
        run_dir: the run directory.
        config: its parsed config.json.
        options: the task's typed options the run was trained with.
        model: the trained `nn.Module`, in evaluation mode, on `device`.
        device: where the model runs.
        tokenizer: the run's tokenizer, or None where the task has none (images, item ids).
    """

    task: ClassVar[str]
    options_class: ClassVar[type]

    def __init__(self, run_dir: Path, config: dict[str, Any], model: nn.Module, device: torch.device | str) -> None:
        self.run_dir, self.config, self.device = Path(run_dir), config, torch.device(device)
        self.options = saved_options(self.options_class, config.get("options"), self.run_dir / "config.json")
        self.model = model.to(self.device).eval()
        self.tokenizer: Any = None
        self.setup()

    @classmethod
    def open(cls, run_dir: Path, config: dict[str, Any], device: torch.device | str = "cpu") -> Run:
        """The run in `run_dir` (config.json already read and checked to be this task's)."""
        model = cls.build_model(run_dir, config)
        load_weights(model, run_dir / "model.safetensors")
        return cls(run_dir, config, model, device)

    @classmethod
    def build_model(cls, run_dir: Path, config: dict[str, Any]) -> nn.Module:
        """The untrained model config.json describes."""
        raise NotImplementedError

    def setup(self) -> None:
        """Load what else the run needs besides the model (tokenizer, data, preprocessing)."""

    def evaluate(self, **kwargs: Any) -> dict[str, float]:
        """The task's metrics, printed and written to RUN_DIR/metrics.json."""
        raise UserError(f"{self.run_dir}: `evaluate` does not apply to {self.task} runs")

    def predict(self, inputs: list[Any], **kwargs: Any) -> list[Any]:
        """One prediction per input (texts, sentences, item histories, image files, prompts)."""
        raise NotImplementedError

    def encode(self, inputs: list[Any]) -> dict[str, Tensor]:
        """User inputs as one model batch on `device` (the inputs of `forward`)."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """The model's output for a batch from `encode`, without gradients."""
        raise NotImplementedError


@dataclass(frozen=True)
class Command:
    """One command a task supports (evaluate, predict, generate): its flags and what it does.

    Attributes:
        add_arguments: adds the task's own flags to the command's parser.
        run: (the opened run, the parsed arguments) -> exit code; prints its results.
        description: what the command does for this task, shown in its --help.
    """

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Run, argparse.Namespace], int]
    description: str


@dataclass(frozen=True)
class TaskSpec:
    """A task as the registry and the command line see it.

    Attributes:
        name: the TASK of `attnkit train TASK`.
        help, description: its one-line help and `attnkit train TASK --help` description.
        options: its options dataclass (flags of `attnkit train TASK`).
        train_defaults: the engine's TrainConfig values this task starts from.
        train: `train(options, train_config, *, resume=False, run_dir=None, log=print) -> metrics`.
        run_class: the `Run` subclass that opens its runs.
        commands: command name -> `Command`, for the commands its runs support.
    """

    name: str
    help: str
    description: str
    options: type
    train_defaults: dict[str, Any]
    train: Callable[..., dict[str, float]]
    run_class: type[Run]
    commands: dict[str, Command] = field(default_factory=dict)
