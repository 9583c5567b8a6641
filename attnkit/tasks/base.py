"""What every task declares (`TaskSpec`) and what every trained run offers (`Run`).

A task is one entry of the registry (`attnkit.tasks.registry`): its name, options, training
defaults, `train` entry point, run class and the commands it supports, each with its own flags.
The command line loops over the registry, so adding a task touches only its own module.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attnkit.engine import load_weights
from attnkit.errors import UserError
from attnkit.options import check_values
from attnkit.precision import model_dtype, to_precision
from attnkit.tasks.rundir import saved_options, start_run, training_lock


class Run:
    """A trained run of one task, opened from its directory: the model and what it needs to be used.

    Open one with `attnkit.runs.open_run(run_dir, device)`. Every task's run offers:

    Attributes:
        task: the task's name ("classify", "translate", ...).
        run_dir: the run directory.
        config: its parsed config.json.
        options: the task's typed options the run was trained with.
        model: the trained `nn.Module`, in evaluation mode, on `device`, prepared for inference at
            `precision` (`attnkit.precision.to_precision`: on a CPU, fp32 fuses q/k/v and packs the
            linear layers' weights).
        device: where the model runs.
        precision: "fp32", "bf16" or "int8" (`attnkit.precision`); `dtype` the model's float dtype.
        parameter_count: the model's parameters as trained (before any conversion).
        tokenizer: the run's tokenizer, or None where the task has none (images, item ids).
    """

    task: ClassVar[str]
    options_class: ClassVar[type]
    model_class: ClassVar[type[nn.Module]]
    config_class: ClassVar[Any]
    # What config.json may hold besides task, options, model and train: the task's own records.
    extra_keys: ClassVar[tuple[str, ...]] = ()
    optional_keys: ClassVar[tuple[str, ...]] = ()  # config.json keys a run of the task may have

    def __init_subclass__(cls, *, task: str, options: type, model: type[nn.Module], config: Any, **kwargs: Any) -> None:
        """A task's run class names its task, options, model and model configuration classes:
        `class VisionRun(Run, task="vision", options=VisionOptions, model=ViT, config=ViTConfig)`."""
        super().__init_subclass__(**kwargs)
        cls.task, cls.options_class, cls.model_class, cls.config_class = task, options, model, config

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        model: nn.Module,
        device: torch.device | str,
        precision: str = "fp32",
    ) -> None:
        self.run_dir, self.config, self.device = Path(run_dir), config, torch.device(device)
        self.options = saved_options(self.options_class, config.get("options"), self.run_dir / "config.json")
        self.precision = precision
        # as trained: the conversions below add copies (fused q/k/v) or hide weights (int8)
        self.parameter_count = sum(p.numel() for p in model.parameters())
        self.model = to_precision(model.to(self.device), precision, self.device).eval()
        self.dtype = model_dtype(self.model)  # what float inputs (images) are cast to
        self.tokenizer: Any = None
        self.setup()

    @classmethod
    def open(
        cls, run_dir: Path, config: dict[str, Any], device: torch.device | str = "cpu", precision: str = "fp32"
    ) -> Run:
        """The run in `run_dir` (config.json already read and checked to be this task's), its model
        at `precision` (`attnkit.precision.to_precision`)."""
        cls.check_config(run_dir / "config.json", config)
        model = cls.build_model(run_dir, config)
        if not (run_dir / "model.safetensors").is_file() and (run_dir / "last" / "state.json").is_file():
            raise UserError(
                f"{run_dir}: no model.safetensors yet: it is written at the run's first evaluation "
                "(a run stopped before that continues with --resume)"
            )
        load_weights(model, run_dir / "model.safetensors")
        return cls(run_dir, config, model, device, precision)

    @classmethod
    def check_config(cls, path: Path, config: dict[str, Any]) -> None:
        """config.json's keys and the types and bounds of its options, each problem naming the field."""
        # "source": where an imported run came from (`attnkit import`), absent in trained runs.
        known = {"task", "options", "model", "train", "source", *cls.extra_keys, *cls.optional_keys}
        unknown = sorted(set(config) - known)
        if unknown:
            raise UserError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}")
        missing = [key for key in cls.extra_keys if key not in config]
        if missing:
            raise UserError(f"{path}: missing {', '.join(map(repr, missing))}")
        classes = config.get("classes", [""])
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            raise UserError(f"{path}: 'classes' must be a list of class names, got {classes!r}")
        for key, declared in (("options", cls.options_class), ("model", cls.config_class)):
            if isinstance(config.get(key), dict):
                try:
                    check_values(declared, config[key])
                except UserError as error:
                    raise UserError(f"{path}: in {key!r}, {str(error).removeprefix('--')}") from None

    @classmethod
    def build_model(cls, run_dir: Path, config: dict[str, Any]) -> nn.Module:
        """The untrained model config.json describes: its "model" as `config_class`, given to `new_model`."""
        try:
            return cls.new_model(cls.config_class.from_dict(config["model"]), config)
        except (TypeError, ValueError) as error:
            raise UserError(f"{run_dir / 'config.json'}: bad 'model' ({error})") from None

    @classmethod
    def new_model(cls, model_config: Any, config: dict[str, Any]) -> nn.Module:
        """`model_class(model_config)`; a task whose model takes more (its classes) overrides this."""
        return cls.model_class(model_config)

    def setup(self) -> None:
        """Load what else the run needs besides the model (tokenizer, data, preprocessing)."""

    def evaluate(self, **kwargs: Any) -> dict[str, float]:
        """The task's metrics, printed and written to RUN_DIR/metrics.json."""
        raise UserError(f"{self.run_dir}: `evaluate` does not apply to {self.task} runs")

    def predict(self, inputs: list[Any], **kwargs: Any) -> list[Any]:
        """One prediction per input (texts, sentences, item histories, image files, prompts)."""
        raise NotImplementedError

    def export_spec(self) -> dict[str, Any]:
        """What `attnkit export onnx` needs besides `example_batch`: "length" (the longest sequence the
        model takes), "axes" (input name -> the name of its dynamic length axis, or None), "output"
        and "meaning" (the name and a description of `forward`'s output)."""
        raise UserError(f"{self.run_dir}: `attnkit export onnx` does not apply to {self.task} runs yet")

    def example_batch(self, batch_size: int, length: int) -> dict[str, Tensor]:
        """A batch as `encode` makes them, of random valid inputs on the CPU, `length` long where the
        inputs are sequences; with two or more rows the last is half padding (export checks)."""
        raise UserError(f"{self.run_dir}: `attnkit export onnx` does not apply to {self.task} runs yet")

    # The options `records` takes (name -> type), checked by `attnkit serve` before it batches requests.
    record_options: ClassVar[dict[str, type]] = {}

    def records(self, inputs: list[Any], **options: Any) -> list[dict[str, Any]]:
        """One JSON-ready object per input: the fields of a line of `attnkit predict --output FILE.jsonl`
        (what `attnkit serve` answers). Options as `record_options`."""
        raise UserError(f"{self.task} runs do not serve predictions yet")

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


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For a command that takes no flags of its task's own."""


def metrics_command(
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] = no_arguments,
    evaluate: Callable[[Any, argparse.Namespace], dict[str, float]] = lambda run, args: run.evaluate(),
) -> Command:
    """An `evaluate` command: `evaluate(run, args)` computes the metrics (which the run prints and
    saves), and the command prints them as one JSON line."""

    def run(opened: Run, args: argparse.Namespace) -> int:
        print(json.dumps(evaluate(opened, args)))
        return 0

    return Command(add_arguments, run, description)


@dataclass(frozen=True)
class TaskSpec:
    """A task as the registry and the command line see it.

    Attributes:
        name: the TASK of `attnkit train TASK`.
        help, description: its one-line help and `attnkit train TASK --help` description.
        options: its options dataclass (flags of `attnkit train TASK`).
        train_defaults: the engine's TrainConfig values this task starts from.
        train_run: trains a run once its process, options and directory are settled (`RunStart`)
            and returns its final metrics; extra keyword arguments are the task's own.
        run_class: the `Run` subclass that opens its runs.
        commands: command name -> `Command`, for the commands its runs support.
        metrics: the validation metrics `--metric` may name (each also with a `val_` prefix).
    """

    name: str
    help: str
    description: str
    options: type
    train_defaults: dict[str, Any]
    train_run: Callable[..., dict[str, float]]
    run_class: type[Run]
    commands: dict[str, Command] = field(default_factory=dict)
    metrics: tuple[str, ...] = ("loss",)

    def train(
        self,
        options: Any,
        train_config: Any,
        *,
        resume: bool = False,
        run_dir: str | Path | None = None,
        log: Callable[[str], None] = print,
        **extra: Any,
    ) -> dict[str, float]:
        """`attnkit train NAME`: a new run from `options`, or with `resume` the run in `run_dir`
        continued from its last checkpoint (options and training settings from its config.json;
        only the device, threads and progress display of `train_config` apply). Returns the final
        metrics (empty on processes other than rank 0)."""
        metric = train_config.metric.removeprefix("val_")
        if metric not in self.metrics:
            raise UserError(f"--metric must be one of {', '.join(self.metrics)} for {self.name}, got {metric!r}")
        if options is not None and hasattr(options, "check_training"):
            options.check_training()  # what a new run needs that a saved run's options may lack
        start = start_run(options, self.options, train_config, resume=resume, run_dir=run_dir, log=log)
        with training_lock(start.run_dir, start.where):
            return self.train_run(start, **extra)


def random_ids(batch_size: int, length: int, low: int, high: int, pad_id: int, *, left: bool = False) -> Tensor:
    """(batch_size, length) ids drawn from [low, high); with two or more rows the last row is half
    padding (on the right, or with `left` on the left): example batches for export checks."""
    generator = torch.Generator().manual_seed(batch_size * 1000 + length)
    ids = torch.randint(low, high, (batch_size, length), generator=generator)
    if batch_size > 1 and length > 1:
        half = length // 2
        if left:
            ids[-1, :half] = pad_id
        else:
            ids[-1, length - half :] = pad_id
    return ids
