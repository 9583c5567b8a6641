"""The training engine's settings: one typed, frozen dataclass that serialises to config.json."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from attnkit.engine.optim import Schedule
from attnkit.nn.config import DictConfig
from attnkit.options import bounds


@dataclass(frozen=True, kw_only=True)
class TrainConfig(DictConfig):
    """How to train, independent of the task.

    Fields:
        epochs: passes over the training data.
        max_steps: stop after exactly this many optimizer steps instead (epochs are then ignored).
        max_minutes: also stop (evaluating and saving first) once training has run this long.
        batch_size: examples per micro-batch (per process under DDP).
        lr: peak learning rate; weight_decay: AdamW decay on weight matrices only.
        beta2: AdamW's second-moment decay.
        schedule: "cosine", "linear", "inverse_sqrt" or "constant" after a linear warm-up.
        warmup_steps: optimizer steps of linear warm-up; min_lr_ratio: floor of the decay.
        grad_clip: clip the global gradient norm to this (0 = off).
        grad_accum: micro-batches per optimizer step.
        bf16: bfloat16 autocast for forward passes.
        compile: wrap the model in `torch.compile`.
        eval_every: evaluate every N optimizer steps (0 = at the end of each epoch).
        save_every: write the resumable `last/` checkpoint every N steps (0 = at each evaluation).
        keep_checkpoints: keep the weights of the last N evaluations in RUN_DIR/checkpoints/ (for
            checkpoint averaging; 0 = none).
        metric: validation metric that picks the best checkpoint; metric_mode: "max" or "min".
        patience: stop after this many evaluations without improvement (0 = never).
        seed: seeds weights, data order and dropout.
        threads: torch CPU threads (None = torch's default).
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
        progress: show progress bars.
        layer_decay: layer-wise learning-rate decay: each layer learns at this factor times the rate
            of the layer above it, the output layer at --lr (as BERT fine-tuning does; 1 = off).
    """

    epochs: int = field(default=10, metadata=bounds(ge=1))
    max_steps: int | None = field(default=None, metadata=bounds(ge=1))
    max_minutes: float | None = field(default=None, metadata=bounds(gt=0))
    batch_size: int = field(default=32, metadata=bounds(ge=1))
    lr: float = field(default=5e-4, metadata=bounds(gt=0))
    weight_decay: float = field(default=0.01, metadata=bounds(ge=0))
    beta2: float = field(default=0.999, metadata=bounds(ge=0, lt=1))
    schedule: Schedule = "cosine"
    warmup_steps: int = field(default=100, metadata=bounds(ge=0))
    min_lr_ratio: float = field(default=0.0, metadata=bounds(ge=0, le=1))
    layer_decay: float = field(
        default=1.0,
        metadata={
            **bounds(gt=0, le=1),
            "help": "layer-wise learning-rate decay: each layer learns at this times the rate of the layer above "
            "it, the output layer at --lr (as BERT fine-tuning does; 1 = off)",
        },
    )
    grad_clip: float = field(default=1.0, metadata=bounds(ge=0))
    grad_accum: int = field(default=1, metadata=bounds(ge=1))
    bf16: bool = False
    compile: bool = False
    eval_every: int = field(default=0, metadata=bounds(ge=0))
    save_every: int = field(default=0, metadata=bounds(ge=0))
    keep_checkpoints: int = field(default=0, metadata=bounds(ge=0))
    metric: str = "val_loss"
    metric_mode: Literal["max", "min"] = "min"
    patience: int = field(default=0, metadata=bounds(ge=0))
    seed: int = 0
    threads: int | None = field(default=None, metadata=bounds(ge=1))
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "save_every", "patience", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.schedule not in ("cosine", "linear", "inverse_sqrt", "constant"):
            raise ValueError(f"schedule must be cosine, linear, inverse_sqrt or constant, got {self.schedule!r}")
        if self.metric_mode not in ("max", "min"):
            raise ValueError(f"metric_mode must be max or min, got {self.metric_mode!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def averaging(self, last: int) -> TrainConfig:
        """This config, keeping at least the last `last` evaluation checkpoints when `last` > 1, so
        that `Trainer.keep_average(last)` has them to average (a task's `--average-last`; 1 = off)."""
        return replace(self, keep_checkpoints=max(self.keep_checkpoints, last)) if last > 1 else self
