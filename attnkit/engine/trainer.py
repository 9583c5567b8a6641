"""The one training loop every task uses. Nothing in this file knows what the model computes.

A task hands the engine a model, batches (a deterministic plan of example indices per epoch and
a collate function), a loss and metrics. The engine owns optimisation (AdamW, schedule, clipping,
accumulation, bf16, compile), evaluation and model selection, early stopping, progress bars and
history, exact resumption from `RUN_DIR/last/`, and DDP under torchrun.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from attnkit.engine import checkpoint
from attnkit.engine.config import TrainConfig
from attnkit.engine.distributed import Dist, all_gather_rows, all_sum, barrier
from attnkit.engine.evaluation import collect, to_device
from attnkit.engine.history import plot_curves, read_history, write_history
from attnkit.engine.interrupt import Interrupted, StopRequests
from attnkit.engine.optim import build_optimizer, build_scheduler
from attnkit.errors import UserError

Batch = dict[str, Tensor]


@dataclass
class Batches:
    """A dataset as the engine sees it.

    Attributes:
        plan: epoch -> list of batches, each a list of example indices; must be deterministic
            (the same epoch gives the same plan), which is what makes resuming exact.
        collate: example indices -> a batch, a dict of tensors.
    """

    plan: Callable[[int], list[list[int]]]
    collate: Callable[[list[int]], Batch]


class Task(Protocol):
    """What a task gives the engine besides the model and batches."""

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
        """Mean training loss of the batch, and how many tokens (or items) it covered."""

    def eval_step(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """Per-example results (tensors with one row per example) for `metrics`."""

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        """Metrics from the concatenated per-example results of a whole evaluation set."""


WARMUP_SHARE = 4  # the warm-up takes at most 1 / WARMUP_SHARE of the planned steps
TIMED_STEPS = 5  # steps timed (after the first, which pays one-off costs) for the run's time estimate
LONG_RUN_MINUTES = 20  # a run estimated to take longer says so once it has timed TIMED_STEPS steps


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite; training stopped before the weights were updated."""


class Trainer:
    """Trains `model` on `train` for `task`, keeping the best weights by `config.metric` on `valid`.

    Args:
        model: any nn.Module (moved to the device, wrapped in DDP/compile as configured).
        task: loss and metrics.
        config: TrainConfig.
        run_dir: where model.safetensors (best), last/ (resume), history.csv, curves.png go.
        train: training batches; valid: validation batches (None = no evaluation during training).
        where: this process's rank and device (from `distributed.setup`).
        log: prints a line (rank 0 only); default print.
        long_run_hint: added to the note printed when the run's estimated time exceeds LONG_RUN_MINUTES,
            e.g. a pointer to a preset sized for a CPU.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        config: TrainConfig,
        run_dir: Path,
        train: Batches,
        valid: Batches | None,
        where: Dist,
        log: Callable[[str], None] = print,
        long_run_hint: str = "",
    ) -> None:
        self.config, self.task, self.where = config, task, where
        self.long_run_hint = long_run_hint
        self.run_dir = Path(run_dir)
        if where.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.train, self.valid = train, valid
        self.log = log if where.is_main else (lambda _msg: None)
        self.model = model.to(where.device)
        self.optimizer = build_optimizer(
            self.model, config.lr, config.weight_decay, (0.9, config.beta2), config.layer_decay
        )
        plan = train.plan(0)
        self.micro_batches = len(self._shard(plan))
        if self.micro_batches == 0:
            raise UserError(
                f"the training data has {sum(map(len, plan))} example(s) in {len(plan)} batch(es) for "
                f"{where.world_size} process(es): too few to train on; give more training data (or hold out "
                "less of it for validation)"
            )
        if valid is not None and not valid.plan(0):
            raise UserError("the validation data is empty: give validation data, or hold out part of the training data")
        self.steps_per_epoch = math.ceil(self.micro_batches / config.grad_accum)
        self.total_steps = config.max_steps or self.steps_per_epoch * config.epochs
        # A warm-up longer than a quarter of the run would leave a short run on small data far below its
        # peak rate for most of its steps; presets' warm-ups are shorter and unaffected.
        self.warmup_steps = min(config.warmup_steps, self.total_steps // WARMUP_SHARE)
        if self.warmup_steps < config.warmup_steps:
            self.log(
                f"note: warm-up of {self.warmup_steps} steps instead of {config.warmup_steps}: at most a "
                f"quarter of the {self.total_steps} planned"
            )
        self.scheduler = build_scheduler(
            self.optimizer,
            schedule=config.schedule,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            min_ratio=config.min_lr_ratio,
        )
        wrapped: nn.Module = self.model
        if where.enabled:
            device_ids = [where.device.index] if where.device.type == "cuda" else None
            wrapped = DistributedDataParallel(wrapped, device_ids=device_ids)
        if config.compile:
            wrapped = torch.compile(wrapped)
        self.wrapped = wrapped

    # ------------------------------------------------------------------ training

    def fit(self, resume: bool = False) -> dict[str, float]:
        """Train to the end (or early stop); return the best validation metrics (or the last loss).

        On Ctrl-C or SIGTERM the step under way ends, `last/` is saved and `Interrupted` is raised:
        `fit(resume=True)` continues from that step exactly (`attnkit.engine.interrupt`)."""
        with StopRequests(self.log) as stops:
            return self._fit(resume, stops)

    def _fit(self, resume: bool, stops: StopRequests) -> dict[str, float]:
        config = self.config
        position = self._fresh_position()
        history: list[dict[str, float]] = []
        if resume:
            found = checkpoint.find_training_state(self.run_dir / "last")
            if found is None:
                raise checkpoint.CheckpointError(f"nothing to resume in {self.run_dir} (no last/ checkpoint)")
            position = checkpoint.load_training_state(found, self.model, self.optimizer, self.scheduler)
            history = [row for row in read_history(self.run_dir / "history.csv") if row["step"] <= position["step"]]
            self.log(f"resuming at step {position['step']} (epoch {position['epoch'] + 1}, batch {position['batch']})")
        progress = self._progress(position["step"])
        started = time.perf_counter() - position["elapsed_s"]
        tokens_window, window_start = 0, time.perf_counter()
        done = position["step"] >= self.total_steps or position["stopped"]
        while not done and (position["epoch"] < config.epochs or config.max_steps):
            batches = self._shard(self.train.plan(position["epoch"]))
            groups = self._step_groups(len(batches))
            while position["batch"] < len(batches):
                group = groups[position["batch"]]
                self.wrapped.train()
                loss_sum, tokens = self._accumulate(batches, group, position["step"] + 1)
                position["loss_sum"] += loss_sum
                position["loss_count"] += 1
                position["batch"] = group.stop
                position["step"] += 1
                tokens_window += tokens
                step = position["step"]
                if step == 1:
                    timing_start = time.perf_counter()
                elif not resume and step == 1 + TIMED_STEPS:
                    self._estimate_time((time.perf_counter() - timing_start) / TIMED_STEPS, step, started)
                if progress is not None:
                    rate = tokens_window / max(time.perf_counter() - window_start, 1e-9)
                    shown = {
                        "loss": f"{loss_sum:.4f}",
                        "lr": f"{self.scheduler.get_last_lr()[0]:.2e}",
                        "tok/s": f"{rate:,.0f}",
                    }
                    if position["best"] is not None:
                        shown[f"best {config.metric}"] = f"{position['best']:.4f}"
                    progress.set_postfix(shown, refresh=False)
                    progress.update(1)
                end_of_epoch = position["batch"] >= len(batches)
                evaluate_now = (config.eval_every and step % config.eval_every == 0) or (
                    not config.eval_every and end_of_epoch
                )
                out_of_time, stop = self._agree(
                    bool(config.max_minutes) and time.perf_counter() - started >= 60 * config.max_minutes,
                    stops.signum is not None,  # Ctrl-C or SIGTERM since the step began
                )
                if step >= self.total_steps or out_of_time:
                    evaluate_now = True
                if end_of_epoch:
                    position["epoch"] += 1
                    position["batch"] = 0
                if evaluate_now:
                    rate = tokens_window / max(time.perf_counter() - window_start, 1e-9)
                    row = self._evaluate_and_select(position, started, rate)
                    history.append(row)
                    if self.where.is_main:
                        write_history(self.run_dir / "history.csv", history)
                        plot_curves(self.run_dir / "curves.png", history)
                    tokens_window, window_start = 0, time.perf_counter()
                if out_of_time and not position["stopped"]:
                    position["stopped"] = True
                    self.log(f"stopping at step {step}: the time limit of {config.max_minutes:g} minutes is reached")
                if step >= self.total_steps or position["stopped"]:
                    done = True
                save_now = evaluate_now or (config.save_every and step % config.save_every == 0) or done
                stop = stop and not done
                if save_now or stop:
                    position["elapsed_s"] = time.perf_counter() - started
                    self._save_last(position)
                if stop:
                    if progress is not None:
                        progress.close()
                    barrier(self.where)
                    raise Interrupted(
                        f"stopped at step {step} of {self.total_steps}; {self.run_dir / 'last'} holds it: "
                        "continue with the same command and --resume",
                        stops.signum or signal.SIGTERM,
                    )
                if done:
                    break
                if end_of_epoch:
                    break
        if progress is not None:
            progress.close()
        if not (self.run_dir / "model.safetensors").exists() and self.where.is_main:
            checkpoint.save_weights_atomic(self.model, self.run_dir / "model.safetensors")
        barrier(self.where)
        return position["best_metrics"] or {"train_loss": position["last_train_loss"]}

    def _accumulate(self, batches: list[list[int]], group: range, step: int) -> tuple[float, int]:
        """Forward/backward over the micro-batches of one optimizer step, then step; a loss that is not
        finite stops training before the weights are touched (`TrainingDiverged`)."""
        config, tokens, loss_total = self.config, 0, 0.0
        for index in group:
            batch = to_device(self.train.collate(batches[index]), self.where.device)
            last = index == group.stop - 1
            sync = contextlib.nullcontext() if last or not self.where.enabled else self.wrapped.no_sync()
            with sync, self._autocast():
                loss, count = self.task.loss(self.wrapped, batch)
                (loss / len(group)).backward()
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"training stopped at step {step}: the loss became {value}. The weights are those of the last "
                    f"step; {self.run_dir / 'last'} holds the last saved checkpoint (continue from it with --resume "
                    "after a change). The usual causes are a learning rate too high for the model (lower --lr or "
                    "lengthen --warmup-steps) and --bf16 on a processor without bfloat16 support."
                )
            loss_total += value / len(group)
            tokens += count
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_total, tokens

    def _estimate_time(self, seconds_per_step: float, step: int, started: float) -> None:
        """Say once, early, when the planned steps will take longer than LONG_RUN_MINUTES (evaluation not
        counted), so that a user who meant a quick run can stop and choose a smaller one."""
        left = seconds_per_step * (self.total_steps - step)
        if self.config.max_minutes:
            left = min(left, 60 * self.config.max_minutes - (time.perf_counter() - started))
        if left <= 60 * LONG_RUN_MINUTES:
            return
        hint = f"; {self.long_run_hint}" if self.long_run_hint else ""
        self.log(
            f"note: at {seconds_per_step:.2f} s per step on {self.where.device.type}, the {self.total_steps:,} planned"
            f" steps take about {round(left / 60):,} more minutes (--max-steps, --max-minutes or a smaller model"
            f" finish sooner{hint})"
        )

    def _step_groups(self, n_batches: int) -> list[range]:
        """For each micro-batch index, the range of micro-batches of its optimizer step."""
        groups: list[range] = []
        for start in range(0, n_batches, self.config.grad_accum):
            group = range(start, min(start + self.config.grad_accum, n_batches))
            groups += [group] * len(group)
        return groups

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, batches: Batches) -> dict[str, float]:
        """Metrics over a whole dataset, computed from every process's share."""
        self.wrapped.eval()
        with self._autocast():
            rows = collect(
                lambda batch: self.task.eval_step(self.model, batch),
                self._shard(batches.plan(0), drop_uneven=False),
                batches.collate,
                self.where.device,
                to_cpu=False,
            )
        gathered = {key: all_gather_rows(values, self.where).cpu() for key, values in rows.items()}
        return self.task.metrics(gathered)

    def _evaluate_and_select(self, position: dict[str, Any], started: float, rate: float) -> dict[str, float]:
        config = self.config
        train_loss = position["loss_sum"] / max(position["loss_count"], 1)
        position["loss_sum"], position["loss_count"] = 0.0, 0
        position["last_train_loss"] = train_loss
        row: dict[str, float] = {
            "step": position["step"],
            "epoch": position["epoch"],
            "train_loss": train_loss,
            "lr": self.scheduler.get_last_lr()[0],
            "tokens_per_s": rate,
        }
        if self.valid is not None:
            metrics = self.evaluate(self.valid)
            row.update({f"val_{k}" if not k.startswith("val_") else k: v for k, v in metrics.items()})
            key = config.metric if config.metric in row else f"val_{config.metric}"
            if key not in row:
                raise KeyError(f"metric {config.metric!r} is not among {sorted(row)}")
            value = row[key]
            better = position["best"] is None or (
                value > position["best"] if config.metric_mode == "max" else value < position["best"]
            )
            if better:
                position["best"], position["bad_evals"] = value, 0
                position["best_metrics"] = {k: v for k, v in row.items() if k.startswith("val_")}
                position["best_step"] = position["step"]
                if self.where.is_main:
                    checkpoint.save_weights_atomic(self.model, self.run_dir / "model.safetensors")
            else:
                position["bad_evals"] += 1
                if config.patience and position["bad_evals"] >= config.patience:
                    position["stopped"] = True
                    self.log(
                        f"early stop at step {position['step']}: {key} has not improved for "
                        f"{config.patience} evaluations (best {position['best']:.4f})"
                    )
        elif self.where.is_main:
            checkpoint.save_weights_atomic(self.model, self.run_dir / "model.safetensors")
        if config.keep_checkpoints and self.where.is_main:
            self._keep_checkpoint(position["step"])
        row["elapsed_s"] = time.perf_counter() - started
        shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_") or k == "train_loss")
        self.log(f"step {position['step']}/{self.total_steps}  {shown}")
        return row

    def checkpoints(self) -> list[Path]:
        """The kept evaluation checkpoints (`keep_checkpoints`), oldest first."""
        return sorted((self.run_dir / "checkpoints").glob("step-*.safetensors"))

    def validation_score(self) -> float:
        """`config.metric` on the validation batches, negated when smaller is better: the figure
        that picks checkpoints, as a score for `keep_average`."""
        if self.valid is None:
            raise ValueError("validation_score needs validation batches")
        metrics = self.evaluate(self.valid)
        name = self.config.metric.removeprefix("val_")
        if name not in metrics:
            raise KeyError(f"metric {self.config.metric!r} is not among {sorted(metrics)}")
        return metrics[name] if self.config.metric_mode == "max" else -metrics[name]

    def keep_average(self, last: int, score: Callable[[], float] | None = None) -> bool:
        """Average the weights of the last `last` kept evaluation checkpoints into the model
        (Vaswani et al. 2017, §6.1: a cheap ensemble along the end of the training trajectory) and
        have rank 0 write them to model.safetensors. With `score` (a validation figure, higher is
        better) the average is kept only if it scores at least as well as the weights in the model
        now, the best checkpoint; else those stay. Every rank makes the same choice from the same
        files. Returns whether the average was kept."""
        model = checkpoint.unwrap(self.model)
        kept = self.checkpoints()[-last:]
        compared = ""
        if score is None:
            checkpoint.average_weights(model, kept)
        else:
            best = score()
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            checkpoint.average_weights(model, kept)
            averaged = score()
            if averaged < best:
                model.load_state_dict(best_state)
                self.log(
                    f"kept the best checkpoint: the average of the last {len(kept)} scores {averaged:.4f} < {best:.4f}"
                )
                return False
            compared = f" ({averaged:.4f} >= {best:.4f})"
        self.log(f"model.safetensors: the average of the last {len(kept)} checkpoints{compared}")
        if self.where.is_main:
            checkpoint.save_weights_atomic(model, self.run_dir / "model.safetensors")
        barrier(self.where)
        return True

    def _keep_checkpoint(self, step: int) -> None:
        directory = self.run_dir / "checkpoints"
        directory.mkdir(exist_ok=True)
        checkpoint.save_weights_atomic(self.model, directory / f"step-{step:09d}.safetensors")
        for old in self.checkpoints()[: -self.config.keep_checkpoints]:
            old.unlink()

    # ------------------------------------------------------------------ plumbing

    def _fresh_position(self) -> dict[str, Any]:
        return {
            "epoch": 0,
            "batch": 0,
            "step": 0,
            "elapsed_s": 0.0,
            "loss_sum": 0.0,
            "loss_count": 0,
            "best": None,
            "best_metrics": None,
            "best_step": None,
            "bad_evals": 0,
            "stopped": False,
            "last_train_loss": float("nan"),
        }

    def _agree(self, *flags: bool) -> list[bool]:
        """Each flag, true when it is true on any process: under torchrun every rank must take the same
        branches after a step (evaluate, stop on the time limit or a signal), or the others would wait
        for it in a collective. One all-reduce per step; none without torchrun."""
        if not self.where.enabled:
            return list(flags)
        summed = all_sum(torch.tensor([float(flag) for flag in flags], device=self.where.device), self.where)
        return [value > 0 for value in summed.tolist()]

    def _save_last(self, position: dict[str, Any]) -> None:
        if self.where.is_main:
            checkpoint.save_training_state(self.run_dir / "last", self.model, self.optimizer, self.scheduler, position)

    def _shard(self, batches: list[list[int]], drop_uneven: bool = True) -> list[list[int]]:
        """This process's batches: every world_size-th, the same count on every rank for training."""
        if not self.where.enabled:
            return batches
        mine = batches[self.where.rank :: self.where.world_size]
        return mine[: len(batches) // self.where.world_size] if drop_uneven else mine

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if not self.config.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.where.device.type, dtype=torch.bfloat16)

    def _progress(self, start: int) -> Any:
        if not (self.config.progress and self.where.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.total_steps,
            initial=start,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )
