"""Normalisation layers over the feature dimension of (B, L, D) sequences.

LayerNorm (Ba et al. 2016) normalises each token by its own features; RMSNorm (Zhang & Sennrich
2019) drops the mean; BatchNorm (Ioffe & Szegedy 2015) normalises each feature by statistics over
the batch, which for padded sequences must skip the padding or the pad tokens leak into every
sequence's output. All take an optional `keep` (B, L) so layers can call them alike.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NormKind = Literal["layer", "rms", "batch"]


class LayerNorm(nn.LayerNorm):
    """`torch.nn.LayerNorm` over the last dimension; `keep` is accepted and unused."""

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """x (B, L, D) -> (B, L, D)."""
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.RMSNorm):
    """`torch.nn.RMSNorm` over the last dimension; `keep` is accepted and unused."""

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """x (B, L, D) -> (B, L, D)."""
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the feature dimension whose statistics come from real tokens only.

    In training, each feature is normalised by the mean and (biased) variance over the real
    positions of the batch, and running estimates are updated as in `torch.nn.BatchNorm1d`
    (momentum, unbiased variance); in evaluation the running estimates are used.

    Args:
        d_model: number of features D.
        eps: added to the variance.
        momentum: weight of the new batch in the running estimates.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.register_buffer("running_mean", torch.zeros(d_model))
        self.register_buffer("running_var", torch.ones(d_model))

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """x (B, L, D), keep (B, L) bool with True at real tokens (None = all real) -> (B, L, D)."""
        if self.training:
            real = x.reshape(-1, x.size(-1)) if keep is None else x[keep]  # (N, D)
            if real.size(0) < 2:
                raise ValueError("MaskedBatchNorm needs at least two real tokens in a training batch")
            mean = real.mean(dim=0)  # (D,)
            var = real.var(dim=0, unbiased=False)
            with torch.no_grad():
                count = real.size(0)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def make_norm(kind: NormKind, d_model: int, eps: float = 1e-5) -> nn.Module:
    """Build the norm named by `kind` ("layer", "rms" or "batch") for width d_model."""
    if kind == "layer":
        return LayerNorm(d_model, eps=eps)
    if kind == "rms":
        return RMSNorm(d_model, eps=eps)
    if kind == "batch":
        return MaskedBatchNorm(d_model, eps=eps)
    raise ValueError(f"norm must be 'layer', 'rms' or 'batch', got {kind!r}")
