"""Dropout that costs nothing where it does nothing."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Dropout(nn.Dropout):
    """`nn.Dropout` that returns its input untouched outside training or at p = 0.

    The same function as `nn.Dropout`; it skips `F.dropout`'s dispatch when nothing is dropped.
    A decoder runs three of these per layer per generated token, where the dispatch is a measurable
    share of a batch-1 step.
    """

    def forward(self, x: Tensor) -> Tensor:
        """x (any shape) -> x with entries zeroed with probability p and the rest scaled by 1 / (1 - p)."""
        if self.training and self.p > 0:
            return F.dropout(x, self.p, True, self.inplace)
        return x
