"""A toy regression task for engine tests: nothing in the engine may depend on what it computes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.batching import length_bucketed_plan
from attnkit.engine import Batches


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))


def toy_batches(n: int, *, shuffle: bool, seed: int = 3) -> Batches:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=generator)
    plan = length_bucketed_plan([1] * n, 8, shuffle=shuffle, seed=seed)
    return Batches(plan, lambda idx: {"x": x[idx], "y": y[idx]})


class ToyTask:
    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        return F.mse_loss(model(batch["x"]).squeeze(-1), batch["y"]), len(batch["y"])

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"se": (model(batch["x"]).squeeze(-1) - batch["y"]) ** 2}

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        return {"mse": float(rows["se"].mean())}
