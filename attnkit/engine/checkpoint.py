"""Checkpoints as safetensors + JSON, written atomically; nothing is ever unpickled.

A checkpoint directory holds `model.safetensors` and, for resuming, `optimizer.safetensors`
(optimizer tensors and RNG states) and `state.json` (step, data position, scheduler, optimizer
hyper-parameters, Python RNG). Directories are written under a temporary name and renamed into
place, so a crash leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from attnkit.atomic import atomic_path, usual_mode
from attnkit.errors import UserError


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, corrupt or does not fit the model."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and `torch.compile` wrappers, whose parameter names are canonical."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DistributedDataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same directory, then rename it over `path`."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def save_weights_atomic(model: nn.Module, path: Path) -> None:
    """Save a model's weights (tied tensors once) to `path` via a temporary file and a rename."""
    with atomic_path(path) as tmp:
        save_model(unwrap(model), str(tmp))


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Save named tensors (e.g. a run's own data) as safetensors via a temporary file and a rename."""
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def load_weights(model: nn.Module, path: Path, skip: tuple[str, ...] = ()) -> None:
    """Load weights saved by `save_weights_atomic` into a (possibly wrapped) model, strictly: every
    tensor of the model from the file, every tensor of the file used. Names starting with a prefix in
    `skip` (e.g. "head." for a new output layer) are neither loaded nor required."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}")
    target = unwrap(model)
    try:
        if skip:
            kept = {k: v for k, v in load_file(str(path)).items() if not k.startswith(skip)}
            mismatch = shape_mismatch(target.state_dict(), {k: tuple(v.shape) for k, v in kept.items()})
            if mismatch:
                raise CheckpointError(f"weights in {path} do not fit the model ({mismatch})")
            missing, unexpected = target.load_state_dict(kept, strict=False)
            missing = [name for name in missing if not name.startswith(skip)]
        else:
            _check_shapes(target, path)
            missing, unexpected = load_model(target, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"cannot read weights from {path}: corrupt or truncated ({error})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {path} do not fit the model (missing: {sorted(missing)[:5]}, "
            f"unexpected: {sorted(unexpected)[:5]})"
        )


def shape_mismatch(own: dict[str, torch.Tensor], saved: dict[str, tuple[int, ...]]) -> str | None:
    """'NAME is (saved shape), the model needs (own shape)' for the first tensor both hold at different
    shapes (e.g. a config.json edited after training), or None when every shared name fits."""
    for name, shape in saved.items():
        if name in own and tuple(own[name].shape) != tuple(shape):
            return f"{name} is {tuple(shape)}, the model needs {tuple(own[name].shape)}"
    return None


def _check_shapes(model: nn.Module, path: Path) -> None:
    """Raise naming the first tensor saved at another shape, which `load_model` would report only as
    a RuntimeError."""
    with safe_open(str(path), framework="pt") as handle:
        saved = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    mismatch = shape_mismatch(model.state_dict(), saved)
    if mismatch:
        raise CheckpointError(f"weights in {path} do not fit the model ({mismatch})")


def average_weights(model: nn.Module, paths: list[Path]) -> None:
    """Load the element-wise mean of several saved weights of `model` into it (the paper averages
    the last 5 checkpoints, §6.1): a cheap ensemble along the end of the training trajectory."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    total: dict[str, torch.Tensor] | None = None
    for path in paths:
        try:
            weights = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"cannot read weights from {path} ({error})") from None
        if total is None:
            total = {k: v.double() for k, v in weights.items()}
        elif set(weights) != set(total):
            raise CheckpointError(f"{path}: holds other tensors than {paths[0]}")
        else:
            for key, value in weights.items():
                total[key] += value.double()
    reference = load_file(str(paths[0]))
    mean = {k: (v / len(paths)).to(reference[k].dtype) for k, v in total.items()}
    with tempfile.TemporaryDirectory() as tmp:
        save_file(mean, str(Path(tmp) / "mean.safetensors"), metadata={"format": "pt"})
        load_weights(model, Path(tmp) / "mean.safetensors")


def save_training_state(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    position: dict[str, Any],
) -> None:
    """Write everything needed to continue training exactly, as one directory swapped in atomically."""
    directory = Path(directory)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        save_model(unwrap(model), str(tmp / "model.safetensors"))
        tensors, opt_meta = _optimizer_to_tensors(optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = state
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        state = {
            "position": position,
            "optimizer": opt_meta,
            "scheduler": _jsonable(scheduler.state_dict()),
            "rng_python": _jsonable(random.getstate()),
            "rng_numpy": _jsonable(np.random.get_state()),
        }
        with open(tmp / "state.json", "w") as handle:
            json.dump(state, handle)
        for path in (tmp, *tmp.iterdir()):
            usual_mode(path)
        _swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find_training_state(directory: Path) -> Path | None:
    """The resumable checkpoint at `directory`, or the previous one if a crash hit mid-swap."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_training_state(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states; return the saved data position."""
    directory = Path(directory)
    try:
        state = json.loads((directory / "state.json").read_text())
        tensors = load_file(str(directory / "optimizer.safetensors"))
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(f"cannot resume from {directory}: {error}") from None
    load_weights(model, directory / "model.safetensors")
    _optimizer_from_tensors(optimizer, tensors, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    random.setstate(_python_rng(state["rng_python"]))
    numpy_state = state["rng_numpy"]
    np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
    return state["position"]


def _swap_in(tmp: Path, directory: Path) -> None:
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def _optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    full = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in full["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": _jsonable(full["param_groups"]), "scalars": scalars}


def _optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = meta["param_groups"]
    for group, current in zip(groups, optimizer.param_groups, strict=False):
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        for key in ("fused", "foreach"):  # how this optimizer computes, not what it computes
            if key in current:
                group[key] = current[key]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"optimizer state does not fit the model: {error}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if torch.is_tensor(value):
        return value.tolist()
    if callable(value):
        return None
    return value


def _python_rng(value: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = value
    return (version, tuple(internal), gauss)
