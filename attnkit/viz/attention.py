"""What is computed from captured attention weights: pure tensor functions, each naming its source.

Weights are (B, H, T, S): batch, heads, queries, keys; each row sums to 1 (0 for a query that may
attend to nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor


def head_summary(weights: Tensor, how: Literal["mean", "max"] = "mean") -> Tensor:
    """(B, H, T, S) -> (B, T, S): the heads' mean, or their element-wise maximum."""
    return weights.mean(dim=1) if how == "mean" else weights.amax(dim=1)


def entropy(weights: Tensor) -> Tensor:
    """(B, H, T, S) -> (B, H, T): each query's attention entropy in nats, -Σ_s a·log a (0·log 0 = 0).

    0 for a query that looks at one key, log S for one that spreads evenly (Clark et al. 2019,
    "What Does BERT Look At?", §3)."""
    return -(weights * weights.clamp_min(1e-30).log()).sum(dim=-1)


def mass_on(weights: Tensor, keys: Tensor) -> Tensor:
    """(B, H, T, S) and keys (B, S) or (S,) bool -> (B, H, T): the weight each query puts on the
    chosen keys (the first token, padding, special tokens; Clark et al. 2019 §3)."""
    keys = keys.to(weights.dtype)
    if keys.dim() == 1:
        keys = keys.expand(weights.size(0), -1)
    return (weights * keys[:, None, None, :]).sum(dim=-1)


def first_token(length: int, device: torch.device | None = None) -> Tensor:
    """(S,) bool, True at position 0: for `mass_on`, the mass on a [CLS]/first token."""
    keys = torch.zeros(length, dtype=torch.bool, device=device)
    keys[0] = True
    return keys


def rollout(layers: Sequence[Tensor], residual: float = 0.5) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", eq. 1).

    Each layer's self-attention (B, H, T, T), first layer first, is averaged over heads and mixed
    with the identity for the residual connection, Â = (1 - residual)·mean_h(A) + residual·I, with
    rows renormalised to sum to 1; the layers are multiplied through: R = Â_L ··· Â_1.

    Returns:
        R (B, T, T): R[b, i, j] is how much of input token j reaches position i at the top.
    """
    if not layers:
        raise ValueError("rollout needs at least one layer")
    result = None
    for weights in layers:
        mixed = _with_identity(weights.mean(dim=1), residual)  # (B, T, T)
        result = mixed if result is None else mixed @ result
    return result


def gradient_rollout(layers: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021, "Generic Attention-model
    Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", eqs. 5-6).

    From R = I, for each layer first to last: Ā = mean_h((∇A ⊙ A)⁺) and R ← R + Ā·R, where ∇A is the
    gradient of the explained output (a class logit) with respect to that layer's weights (B, H, T, T).

    Returns:
        R (B, T, T): R[b, i, j] is token j's relevance to position i.
    """
    if len(layers) != len(grads) or not layers:
        raise ValueError(f"gradient_rollout needs one gradient per layer, got {len(layers)} and {len(grads)}")
    batch, _, length, _ = layers[0].shape
    result = torch.eye(length, dtype=layers[0].dtype, device=layers[0].device).expand(batch, -1, -1)
    for weights, grad in zip(layers, grads, strict=True):
        relevance = (grad * weights).clamp_min(0).mean(dim=1)  # (B, T, T)
        result = result + relevance @ result
    return result


def pooled_row(relevance: Tensor, pooling: Literal["cls", "mean"], keep: Tensor | None = None) -> Tensor:
    """R (B, T, T) -> (B, T): the relevance of each input token to what feeds a pooled head.

    "cls": the row of the first position (the [CLS] token a CLS-pooled classifier or ViT reads);
    "mean": the mean of the rows of the real positions (`keep` (B, T) True at real tokens; all when
    None), as a mean-pooled head averages them."""
    if pooling == "cls":
        return relevance[:, 0, :]
    if keep is None:
        return relevance.mean(dim=1)
    keep = keep.to(relevance.dtype)  # (B, T)
    return (relevance * keep[:, :, None]).sum(dim=1) / keep.sum(dim=1, keepdim=True).clamp_min(1)


def alignment(cross: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-attention (B, H, T, S) of a decoder layer -> its head-averaged alignment (B, T, S) and
    the source position each target token looks at most (B, T) (Bahdanau et al. 2015, Fig. 3; for
    Transformers, the alignment layer of Garg et al. 2019)."""
    averaged = cross.mean(dim=1)
    return averaged, averaged.argmax(dim=-1)


def _with_identity(averaged: Tensor, residual: float) -> Tensor:
    """(B, T, T) -> (1 - residual)·A + residual·I, each row renormalised to sum to 1."""
    eye = torch.eye(averaged.size(-1), dtype=averaged.dtype, device=averaged.device)
    mixed = (1 - residual) * averaged + residual * eye
    return mixed / mixed.sum(dim=-1, keepdim=True)
