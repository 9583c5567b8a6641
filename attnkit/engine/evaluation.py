"""The one evaluation loop: a step over every batch of a dataset, its per-example rows gathered.

Training (`Trainer.evaluate`, sharded over DDP processes) and every run's `evaluate` and `predict`
go through `collect`, so what a metric sees is computed the same way in both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

Batch = dict[str, Tensor]


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of `batch` on `device` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def collect(
    step: Callable[[Batch], dict[str, Tensor]],
    plan: Iterable[list[int]],
    collate: Callable[[list[int]], Batch],
    device: torch.device,
    *,
    in_order: bool = False,
    to_cpu: bool = True,
) -> dict[str, Tensor]:
    """Run `step` on each batch of `plan` without gradients; concatenate its rows.

    Args:
        step: a batch on `device` -> per-example tensors, each with one row per example (N_b, ...).
        plan: batches as lists of example indices (e.g. `Batches.plan(0)`).
        collate: example indices -> a batch.
        device: where the batches go.
        in_order: put the rows back in the order of the example indices (batches sorted by length
            come back in the dataset's order); the plan must then cover indices 0..N-1 once.
        to_cpu: move each batch's rows to the CPU as they come (False keeps them on `device`).

    Returns:
        key -> (N, ...) rows of every batch; floating rows in float32.
    """
    rows: dict[str, list[Tensor]] = {}
    order: list[int] = []
    with torch.no_grad():
        for indices in plan:
            for key, value in step(to_device(collate(indices), device)).items():
                value = value.detach().float() if value.is_floating_point() else value.detach()
                rows.setdefault(key, []).append(value.cpu() if to_cpu else value)
            order += indices
    out = {key: torch.cat(values) for key, values in rows.items()}
    if in_order and order:
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        out = {key: value[inverse.to(value.device)] for key, value in out.items()}
    return out
