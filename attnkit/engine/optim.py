"""AdamW with decoupled weight decay on matrices only, and warm-up + decay learning-rate schedules."""

from __future__ import annotations

import math
import re
from typing import Literal

import torch
from torch import nn

Schedule = Literal["cosine", "linear", "inverse_sqrt", "constant"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Split parameters into decayed (weight matrices) and not decayed (norms, biases, embeddings).

    Decay on norm gains and biases pulls them towards 0 for no benefit; on embeddings it shrinks
    rare tokens' vectors just because they are rarely updated (as in GPT-2/nanoGPT/BERT).
    """
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding) or "Embedding" in type(module).__name__:  # tokens and positions
            no_decay.update(id(p) for p in module.parameters(recurse=False))
        for name, param in module.named_parameters(recurse=False):
            if param.dim() < 2 or "norm" in type(module).__name__.lower() or name == "bias":
                no_decay.add(id(param))
    decay, plain, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (plain if id(param) in no_decay else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]


LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_depths(model: nn.Module) -> dict[int, int]:
    """Each parameter's depth (by id) for layer-wise learning-rate decay: 0 for the embeddings (names
    with "embed", and whatever comes before the first layer), i + 1 in a stack's `layers.i`, and
    L + 1, the top, for what follows the L layers (final norm, pooler, head)."""
    named = list(model.named_parameters())
    depths: dict[int, int] = {}
    layered = [int(m.group(1)) for name, _ in named if (m := LAYER.search(name))]
    top = (max(layered) + 2) if layered else 1
    before_layers = True
    for name, param in named:
        found = LAYER.search(name)
        if found:
            before_layers = False
        depth = int(found.group(1)) + 1 if found else 0 if before_layers or "embed" in name else top
        depths.setdefault(id(param), depth)  # a tied parameter keeps its first (embedding) depth
    return depths


def decayed_groups(
    groups: list[dict[str, object]], model: nn.Module, lr: float, decay: float
) -> list[dict[str, object]]:
    """`groups` split by layer depth, each with lr * decay ** (top - depth): the output layers learn at
    `lr`, each layer below at `decay` times the rate of the one above (Howard & Ruder 2018; BERT
    fine-tuning as in Clark et al. 2020)."""
    depths = layer_depths(model)
    top = max(depths.values(), default=0)
    split = []
    for group in groups:
        by_depth: dict[int, list[nn.Parameter]] = {}
        for param in group["params"]:  # type: ignore[union-attr]
            by_depth.setdefault(depths[id(param)], []).append(param)
        for depth in sorted(by_depth):
            split.append({**group, "params": by_depth[depth], "lr": lr * decay ** (top - depth)})
    return split


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    layer_decay: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over `param_groups`, with `layer_decay` < 1 split by layer
    (`decayed_groups`).

    PyTorch's fused kernel (one pass over each parameter for all of Adam's updates) where every
    parameter is on the CPU or CUDA: the same update to within float rounding, and on the CPU faster
    than the per-parameter loop PyTorch uses there by default (`make bench-cpu-train` times both).
    """
    groups = param_groups(model, weight_decay)
    if layer_decay < 1:
        groups = decayed_groups(groups, model, lr, layer_decay)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def lr_factor(step: int, *, schedule: Schedule, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    Linear warm-up over `warmup_steps`, then: cosine or linear decay to `min_ratio` at
    `total_steps`; inverse square root (Vaswani et al. 2017, §5.3: proportional to step^-0.5,
    equal to the peak at the end of warm-up); or constant.
    """
    step = step + 1
    if warmup_steps and step <= warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "inverse_sqrt":
        return math.sqrt(max(warmup_steps, 1) / step)
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return min_ratio + (1.0 - min_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    schedule: Schedule,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimizer step with `lr_factor`."""

    def factor(step: int) -> float:
        return lr_factor(
            step, schedule=schedule, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
