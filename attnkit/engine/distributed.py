"""Distributed data parallel set-up from torchrun's environment, and the few collectives we need.

`torchrun --nproc_per_node=N -m attnkit train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; we then
join a process group (NCCL on GPUs, gloo on CPU). Without those variables everything is a single
process and the collectives below do nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from attnkit.errors import UserError


@dataclass(frozen=True)
class Dist:
    """This process's place: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def parse_device(device: str | torch.device) -> torch.device:
    """--device as a torch device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"; anything
    else, or CUDA asked for where there is none, is a `UserError`."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if chosen.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    return chosen


def setup(device: str = "auto") -> Dist:
    """Join torchrun's process group if there is one and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = parse_device(device)
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device("cuda", local_rank if world_size > 1 else 0)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def teardown() -> None:
    """Leave the process group; the barrier first, so no process closes connections another still uses."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_sum(values: torch.Tensor, where: Dist) -> torch.Tensor:
    """Sum a tensor over all processes."""
    if where.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_rows(values: torch.Tensor, where: Dist) -> torch.Tensor:
    """Concatenate every process's rows (dim 0, sizes may differ), in rank order."""
    if not where.enabled:
        return values
    size = torch.tensor([values.size(0)], device=values.device)
    sizes = [torch.zeros_like(size) for _ in range(where.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = values.new_zeros((longest, *values.shape[1:]))
    padded[: values.size(0)] = values
    gathered = [torch.zeros_like(padded) for _ in range(where.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes, strict=True)])


def barrier(where: Dist) -> None:
    if where.enabled:
        dist.barrier()
