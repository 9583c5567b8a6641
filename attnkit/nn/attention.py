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

from attnkit.nn.dropout import dropout
from attnkit.nn.masks import causal_mask

# Up to this many keys, bfloat16 attention on the CPU runs faster written out than in PyTorch's flash
# kernel, forward and backward; `make bench-cpu-train` measures both at several key counts.
SHORT_KEYS = 192


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

    Takes the fused path except where the written-out one is known to be faster or is needed:
    - the weights are asked for;
    - inside a graph being compiled (`torch.compile`) with a single query on the CPU, where the
      compiler fuses the written-out path into a faster decoding step (`make bench-lm`);
    - bfloat16 on the CPU with at most `SHORT_KEYS` keys, where PyTorch's flash kernel is slower
      than the written-out path, forward and backward (`make bench-cpu-train` measures both).

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
    if q.device.type == "cpu" and (
        (q.size(-2) == 1 and torch.compiler.is_compiling()) or (q.dtype == torch.bfloat16 and k.size(-2) <= SHORT_KEYS)
    ):
        return reference_attention(q, k, v, mask, causal=causal, dropout_p=dropout_p)[0]
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
    dropped = dropout(weights, dropout_p) if dropout_p > 0 else weights
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
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)
    if keep is not None and torch.compiler.is_exporting():
        # PyTorch's CPU kernels give zeros for a query with no key to attend to; the exported graph
        # (softmax over masked scores) would average every value instead, so it says so itself.
        out = out.masked_fill(~keep.any(dim=-1, keepdim=True), 0.0)
    return out


def chunked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
    chunk_size: int = 256,
) -> Tensor:
    """Attention over blocks of queries, keeping O(T) instead of O(T · S) for the backward pass.

    The recomputation idea of FlashAttention (Dao et al. 2022) at the granularity of query blocks:
    the forward pass keeps only q, k, v and the output; the backward pass recomputes each block's
    weights and regenerates its dropout mask from a seed. Extra memory is O(chunk_size · S). With
    `causal`, a block only looks at keys up to its last query. PyTorch's CPU kernels have no
    dropout of their own and fall back to a path that materialises the (T, S) weights.

    Arguments as `scaled_dot_product_attention`; returns out (B, H, T, Dv).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0 else 0
    return _ChunkedAttention.apply(q, k, v, mask, causal, dropout_p, chunk_size, seed)


class _ChunkedAttention(torch.autograd.Function):
    """Forward and hand-written backward of `chunked_attention`."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal, dropout_p, chunk_size, seed):
        # With dropout mask M and s = 1 / (1 - p): out = (P ∘ M) V · s. The scale s is applied to
        # the (C, Dv) products rather than the (C, S) weights: same result, less work.
        rescale = 1.0 / (1.0 - dropout_p)
        out = q.new_empty(*q.shape[:-1], v.size(-1))  # (B, H, T, Dv)
        for block in _blocks(q, k, mask, causal, chunk_size):
            weights = block.weights(q, k)  # (B, H, C, S'), S' = keys visible to the block
            if dropout_p > 0:
                weights.masked_fill_(block.dropped(weights, dropout_p, seed), 0.0)
            out[..., block.rows, :] = (weights @ v[..., : block.visible, :]) * rescale  # (B, H, C, Dv)
        ctx.save_for_backward(q, k, v, out, mask)
        ctx.settings = (causal, dropout_p, chunk_size, seed)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, mask = ctx.saved_tensors
        causal, dropout_p, chunk_size, seed = ctx.settings
        scale = 1.0 / math.sqrt(q.size(-1))
        rescale = 1.0 / (1.0 - dropout_p)
        grad_q, grad_k, grad_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for block in _blocks(q, k, mask, causal, chunk_size):
            keys = slice(0, block.visible)
            weights = block.weights(q, k)  # P (B, H, C, S')
            d_out = grad_out[..., block.rows, :]  # (B, H, C, Dv)
            d_out_scaled = d_out * rescale
            d_weights = d_out_scaled @ v[..., keys, :].transpose(-2, -1)  # dP (B, H, C, S')
            dropped = block.dropped(weights, dropout_p, seed) if dropout_p > 0 else None
            if dropped is not None:
                d_weights.masked_fill_(dropped, 0.0)
            # Softmax backward: dS = P ∘ (dP − Σⱼ Pᵢⱼ dPᵢⱼ), and Σⱼ Pᵢⱼ dPᵢⱼ = dOᵢ · Oᵢ.
            row_dot = (d_out * out[..., block.rows, :]).sum(dim=-1, keepdim=True)  # (B, H, C, 1)
            d_scores = d_weights.sub_(row_dot).mul_(weights)  # dS (B, H, C, S'), in dP's memory
            grad_q[..., block.rows, :] = (d_scores @ k[..., keys, :]) * scale
            grad_k[..., keys, :] += (d_scores.transpose(-2, -1) @ q[..., block.rows, :]) * scale
            if dropped is not None:
                weights.masked_fill_(dropped, 0.0)  # P ∘ M, now that dS no longer needs P
            grad_v[..., keys, :] += weights.transpose(-2, -1) @ d_out_scaled
        return grad_q, grad_k, grad_v, None, None, None, None, None


class _Block:
    """One block of queries [start, stop) and the keys it can see, for `chunked_attention`."""

    def __init__(self, index: int, start: int, stop: int, visible: int, mask: Tensor | None) -> None:
        self.index, self.rows, self.visible, self.mask = index, slice(start, stop), visible, mask

    def weights(self, q: Tensor, k: Tensor) -> Tensor:
        """The block's attention weights before dropout, as in `reference_attention`."""
        scaled_q = q[..., self.rows, :] * (1.0 / math.sqrt(q.size(-1)))  # (B, H, C, D)
        scores = scaled_q @ k[..., : self.visible, :].transpose(-2, -1)  # (B, H, C, S')
        if self.mask is None:
            return scores.softmax(dim=-1)
        weights = scores.masked_fill_(~self.mask, torch.finfo(scores.dtype).min).softmax(dim=-1)
        return weights.masked_fill_(~self.mask.any(dim=-1, keepdim=True), 0.0)

    def dropped(self, like: Tensor, dropout_p: float, seed: int) -> Tensor:
        """Which weights dropout zeroes (bool, like's shape); the same in forward and backward."""
        generator = torch.Generator(device=like.device).manual_seed(seed + self.index)
        uniform = torch.empty(like.shape, device=like.device, dtype=like.dtype)
        return uniform.uniform_(generator=generator) < dropout_p


def _blocks(q: Tensor, k: Tensor, mask: Tensor | None, causal: bool, chunk_size: int) -> list[_Block]:
    q_len, k_len = q.size(-2), k.size(-2)
    blocks = []
    for index, start in enumerate(range(0, q_len, chunk_size)):
        stop = min(start + chunk_size, q_len)
        visible = k_len - q_len + stop if causal else k_len  # keys any query of the block may see
        block_mask = mask
        if block_mask is not None:
            rows = slice(start, stop) if block_mask.size(-2) > 1 else slice(None)
            cols = slice(0, visible) if block_mask.size(-1) > 1 else slice(None)
            block_mask = block_mask[..., rows, cols]
        if causal:
            tri = causal_mask(stop - start, visible, offset=k_len - q_len + start, device=q.device)
            block_mask = tri if block_mask is None else block_mask & tri
        blocks.append(_Block(index, start, stop, visible, block_mask))
    return blocks


def _may_attend(mask: Tensor | None, causal: bool, q_len: int, k_len: int, device: torch.device) -> Tensor | None:
    """Combine a user mask and the causal rule into one mask (None when nothing is hidden)."""
    if causal and q_len > 1:  # one query at the end of the sequence sees every key anyway
        tri = causal_mask(q_len, k_len, device=device)  # (T, S)
        mask = tri if mask is None else mask & tri
    return mask


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"attention expects q, k, v of shape (B, H, L, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.size(-1) != k.size(-1):
        raise ValueError(f"q and k head dims differ: {q.size(-1)} vs {k.size(-1)}")
    if k.size(-2) != v.size(-2):
        raise ValueError(f"k and v lengths differ: {k.size(-2)} vs {v.size(-2)}")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = may attend), got {mask.dtype}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
