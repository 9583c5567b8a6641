"""Scaled dot-product attention, Vaswani et al. 2017 ("Attention Is All You Need"), §3.2.1.

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V

Two paths compute the same function. The reference path writes every step out and is the only one
that can return the attention weights; the fused path hands the work to PyTorch's kernel
(`torch.nn.functional.scaled_dot_product_attention`), which never materialises the (T, S) weight
matrix on its flash/memory-efficient backends. Tests hold the two equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.nn.masks import causal_mask


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attend from queries to keys and average the values.

    Takes the fused path unless the weights are asked for.

    Args:
        q: queries (B, H, T, D).
        k: keys (B, H, S, D).
        v: values (B, H, S, Dv).
        mask: bool, broadcastable to (B, H, T, S); True = may attend. Padding masks are usually
            `keep[:, None, None, :]` with keep (B, S).
        causal: query i may only attend keys up to its own position. When T < S (cached decoding)
            the queries are taken to be the last T positions: query i sits at position S - T + i.
        dropout_p: dropout on the attention weights; applied whenever > 0 (the caller decides
            training vs. evaluation, as with PyTorch's function).
        return_weights: also return the attention weights (forces the reference path).

    Returns:
        out (B, H, T, Dv), or (out, weights (B, H, T, S)) when `return_weights`. Query rows with no
        key to attend to give zeros (and zero weights), never NaN.
    """
    _check_inputs(q, k, v, mask, dropout_p)
    if return_weights:
        return reference_attention(q, k, v, mask, causal=causal, dropout_p=dropout_p)
    return fused_attention(q, k, v, mask, causal=causal, dropout_p=dropout_p)


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The step-by-step computation; the specification the fused path is tested against.

    Arguments as in `scaled_dot_product_attention`.

    Returns:
        out (B, H, T, Dv) and the attention weights (B, H, T, S) before dropout.
    """
    q_len, k_len = q.size(-2), k.size(-2)
    scale = 1.0 / math.sqrt(q.size(-1))
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
    keep = _may_attend(mask, causal, q_len, k_len, q.device)  # broadcastable to (B, H, T, S), or None
    if keep is not None:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)  # (B, H, T, S)
    if keep is not None:
        # A row with every key masked would otherwise average all values uniformly.
        weights = weights.masked_fill(~keep.any(dim=-1, keepdim=True), 0.0)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    out = dropped @ v  # (B, H, T, Dv)
    return out, weights


def fused_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> Tensor:
    """PyTorch's fused kernel with attnkit's mask conventions; returns out (B, H, T, Dv).

    A causal flag is passed to the kernel as `is_causal` when it can be (square attention, no other
    mask), so no (T, S) matrix is built; otherwise causality and the mask are combined into one
    boolean mask, which PyTorch's kernels accept in the same "may attend" polarity.
    """
    q_len, k_len = q.size(-2), k.size(-2)
    if mask is None and causal and q_len == k_len:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    keep = _may_attend(mask, causal, q_len, k_len, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)


def _may_attend(
    mask: Tensor | None, causal: bool, q_len: int, k_len: int, device: torch.device
) -> Tensor | None:
    """Combine a user mask and the causal rule into one mask (None when nothing is hidden)."""
    if causal and q_len > 1:  # one query at the end of the sequence sees every key anyway
        tri = causal_mask(q_len, k_len, device=device)  # (T, S)
        mask = tri if mask is None else mask & tri
    return mask


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "attention expects q, k, v of shape (B, H, L, D); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.size(-1) != k.size(-1):
        raise ValueError(f"q and k head dims differ: {q.size(-1)} vs {k.size(-1)}")
    if k.size(-2) != v.size(-2):
        raise ValueError(f"k and v lengths differ: {k.size(-2)} vs {v.size(-2)}")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = may attend), got {mask.dtype}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
