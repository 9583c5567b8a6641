"""Module adapters the tasks hand to the engine."""

from __future__ import annotations

from torch import Tensor, nn


class HiddenForward(nn.Module):
    """Makes a model's `hidden(...)` (final states, before the output layer) its forward, so the engine
    and DDP call it like any module while the task computes the loss chunk by chunk through the output layer.
    `engine.unwrap` strips this wrapper too (it holds the model as `.module`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = model

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.module.hidden(*inputs)
