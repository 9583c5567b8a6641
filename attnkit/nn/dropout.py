"""Dropout that costs nothing where it does nothing, and little on the CPU where it does."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16  # a CPU dropout mask draws 16 random bits per element


def dropout(x: Tensor, p: float, inplace: bool = False) -> Tensor:
    """x (any shape) -> x with entries zeroed with probability p and the rest scaled by 1 / (1 - p).

    Always drops (the caller decides training vs. evaluation). On CUDA this is `F.dropout`. On the
    CPU, `F.dropout`'s masks are a large share of a bfloat16 training step; here each 64-bit draw
    from torch's default generator serves four elements, 16 bits each, which makes masks cheaper
    (`make bench-cpu-train` measures it against `F.dropout`). Runs repeat from `torch.manual_seed` as before, though
    the masks differ from `F.dropout`'s. The drop probability is p rounded to a multiple of 2^-16
    (at most 7.6e-6 off) and the scale uses the rounded value, so E[out] = x exactly; a p that would
    round to 0 or 1 takes `F.dropout`.
    """
    level = round(p * _LEVELS)
    if x.device.type != "cpu" or not 0 < level < _LEVELS:
        return F.dropout(x, p, True, inplace)
    n = x.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # full 64-bit range
    bits = draws.view(torch.int16)[:n].view(x.shape)  # uniform over [-2^15, 2^15)
    noise = (bits >= level - _LEVELS // 2).to(x.dtype).mul_(_LEVELS / (_LEVELS - level))
    return x.mul_(noise) if inplace else x * noise


class Dropout(nn.Dropout):
    """`nn.Dropout` that returns its input untouched outside training or at p = 0.

    In training it calls `dropout` above (`F.dropout` on CUDA; a cheaper mask of the same
    distribution on the CPU). Outside training it skips the dispatch altogether: a decoder runs three
    of these per layer per generated token, where the dispatch is a measurable share of a batch-1 step.
    """

    def forward(self, x: Tensor) -> Tensor:
        """x (any shape) -> x with entries zeroed with probability p and the rest scaled by 1 / (1 - p)."""
        if self.training and self.p > 0:
            return dropout(x, self.p, self.inplace)
        return x
