"""A run directory's files: config.json, metrics.json and the start of a run, for every task.

config.json is written last and atomically: it is what marks a directory as a run, so an
interrupted start leaves no half-made run behind. Opening a run as an object is `attnkit.runs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch

from attnkit.atomic import atomic_path
from attnkit.engine import Dist, TrainConfig, setup
from attnkit.engine.checkpoint import write_json_atomic
from attnkit.engine.distributed import barrier
from attnkit.errors import UserError


def read_config(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Check that `run_dir` is a finished or resumable run and return its path and parsed config.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{run_dir}: not a run directory (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{config_path}: unreadable ({error})") from None
    if not isinstance(config, dict) or "task" not in config:
        raise UserError(f"{config_path}: not an attnkit run configuration")
    return run_dir, config


def read_init_run(init: str | Path, task: str, wanted: str, options_class: type) -> tuple[Path, dict[str, Any], Any]:
    """The run `--init` names, checked to be a `task` run with a model configuration and weights:
    its path, config.json and saved options. `wanted` says what to start from, for the message
    (e.g. "an lm run (e.g. an imported GPT-2)")."""
    run_dir, config = read_config(init)
    if config["task"] != task:
        raise UserError(f"--init {run_dir}: is a {config['task']} run; start from {wanted}")
    if "model" not in config:
        raise UserError(f"{run_dir}: has no model configuration to start from")
    if not (run_dir / "model.safetensors").is_file():
        raise UserError(f"{run_dir}: no model.safetensors to start from")
    return run_dir, config, saved_options(options_class, config.get("options"), run_dir / "config.json")


def copy_files(source: Path, names: tuple[str, ...] | list[str]) -> Callable[[Path], None]:
    """`write_new_run`'s `files`: copy `names` from the folder `source` into the new run."""

    def files(run_dir: Path) -> None:
        for name in names:
            shutil.copyfile(Path(source) / name, run_dir / name)

    return files


def run_config(task: str, options: Any, model: Any, train: TrainConfig, **extra: Any) -> dict[str, Any]:
    """The config.json of a new run: its task, options, model configuration, training settings and
    what else the task records (`extra`: the classes, the input normalisation, ...)."""
    return {
        "task": task,
        "options": dataclasses.asdict(options),
        "model": model.to_dict(),
        "train": train.to_dict(),
        **extra,
    }


LOCK = ".lock"


@contextlib.contextmanager
def training_lock(run_dir: Path, where: Dist) -> Iterator[None]:
    """Hold `run_dir/.lock` while a run trains (rank 0; an advisory `flock`, released however the
    process ends). A second `attnkit train` with the same --out, or a --resume of a run still
    training, is refused at once instead of both writing the same checkpoints. A new run's folder
    that holds nothing but the lock when training fails (bad data, say) is removed again."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; runs are not guarded
        fcntl = None
    if not where.is_main or fcntl is None:
        yield
        return
    made = not run_dir.exists()
    _make_out(run_dir)
    handle = open(run_dir / LOCK, "a+")  # noqa: SIM115 (held open for the whole run)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(
                f"{run_dir} is being trained by another process (pid {holder}): wait for it or stop it "
                "(Ctrl-C saves its step; then --resume), or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            if made and [p.name for p in run_dir.iterdir()] == [LOCK]:
                (run_dir / LOCK).unlink()
                run_dir.rmdir()
    finally:
        handle.close()


def prepare_new_run(run_dir: str | Path) -> Path:
    """Create `run_dir` for a new run; refuse one that already holds a run.

    A directory whose run never saved weights or a checkpoint (it failed after its config.json was
    written, e.g. on data too small to train on) holds no work to lose, and is reused."""
    run_dir = Path(run_dir)
    trained = any((run_dir / name).exists() for name in ("model.safetensors", "last", "checkpoints"))
    if (run_dir / "config.json").exists() and trained:
        raise UserError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    _make_out(run_dir)
    return run_dir


def _make_out(run_dir: Path) -> None:
    """Create the --out folder (and its parents), or say in one line why it cannot be."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {run_dir}: cannot create it ({error.strerror})") from None


def write_metrics(run_dir: Path, metrics: dict[str, float]) -> None:
    """metrics.json: one flat object of metric name to number."""
    write_json_atomic(run_dir / "metrics.json", {k: float(v) for k, v in metrics.items()})


def quiet(_message: str) -> None:
    """The log of processes other than rank 0: they print nothing."""


class RunStart(NamedTuple):
    """Where a training command stands once its process, options and run directory are settled.

    A tuple, so a task unpacks it in one line: `where, run_dir, options, train_config, saved, log, resume`.
    `saved` is the resumed run's config.json (None for a new run).
    """

    where: Dist
    run_dir: Path
    options: Any
    train_config: TrainConfig
    saved: dict[str, Any] | None
    log: Any
    resume: bool


def saved_options(options_cls: type, saved: Any, source: str | Path = "config.json") -> Any:
    """The options a run was saved with; a field added since then takes the value its behaviour had before.

    An options class lists those values in `SAVED_WITHOUT` (field -> value) when a new field's default
    differs from what runs saved without it did; other absent fields take their defaults. A field the
    class does not have is an error that names it (`source`: the file, for the message).
    """
    if not isinstance(saved, dict):
        raise UserError(f"{source}: 'options' must be an object of option names to values")
    known = {f.name for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise UserError(f"{source}: unknown option(s) {', '.join(map(repr, unknown))} in 'options'")
    try:
        return options_cls(**{**getattr(options_cls, "SAVED_WITHOUT", {}), **saved})
    except (TypeError, ValueError) as error:
        raise UserError(f"{source}: bad 'options' ({error})") from None


def start_run(
    options: Any,
    options_cls: type,
    train_config: TrainConfig,
    *,
    resume: bool,
    run_dir: str | Path | None,
    log: Any,
) -> RunStart:
    """Join the process group, set threads, and on --resume take options and training settings from the run.

    Resuming keeps only the device, thread count and progress display of the new command line.
    """
    where = setup(train_config.device)
    if not where.is_main:
        log = quiet
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    directory = Path(run_dir if run_dir is not None else options.out)
    saved = None
    if resume:
        directory, saved = read_config(directory)
        options = saved_options(options_cls, saved.get("options"), directory / "config.json")
        train_config = dataclasses.replace(
            TrainConfig.from_dict(saved["train"]),
            progress=train_config.progress,
            threads=train_config.threads,
            device=train_config.device,
        )
    return RunStart(where, directory, options, train_config, saved, log, resume)


def write_new_run(
    run_dir: Path,
    where: Dist,
    config: dict[str, Any],
    *,
    tokenizer: Any = None,
    files: Callable[[Path], None] | None = None,
) -> None:
    """Rank 0 creates a new run directory; the other processes wait for it.

    It writes `tokenizer.json` (a HF tokenizer) when given, then lets `files(run_dir)` write what
    else the run needs (its data, a character vocabulary), and config.json last: config.json is
    what marks a directory as a run, so an interrupted start leaves no half-made run behind.
    """
    if where.is_main:
        prepare_new_run(run_dir)
        if tokenizer is not None:
            with atomic_path(run_dir / "tokenizer.json") as tmp:
                tokenizer.save(str(tmp))
        if files is not None:
            files(run_dir)
        write_json_atomic(run_dir / "config.json", config)
    barrier(where)
