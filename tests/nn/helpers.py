"""Shared test helpers: an independent float64 attention, masks built without attnkit, weight copying."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnkit.nn import Decoder, DecoderLayer, Encoder, EncoderLayer, MultiHeadAttention


def allowed_mask(
    batch: int, q_len: int, k_len: int, *, lengths: list[int] | None = None, causal: bool = False
) -> Tensor:
    """(B, 1, T, S) "may attend" mask built from first principles, not with attnkit.nn.masks.

    lengths: real keys per sequence (right padding); causal: query i sits at position S - T + i.
    """
    allowed = torch.ones(batch, 1, q_len, k_len, dtype=torch.bool)
    if lengths is not None:
        for b, n in enumerate(lengths):
            allowed[b, :, :, n:] = False
    if causal:
        for i in range(q_len):
            allowed[:, :, i, k_len - q_len + i + 1 :] = False
    return allowed


def naive_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """softmax(q kᵀ / √d) v in float64 with einsum; rows with no allowed key give zero weights.

    q (B, H, T, D), k (B, H, S, D), v (B, H, S, Dv), allowed bool broadcastable to (B, H, T, S).
    Returns out (B, H, T, Dv) and weights (B, H, T, S), both float64 and differentiable.
    """
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.size(-1))
    if allowed is None:
        weights = scores.softmax(dim=-1)
    else:
        allowed = allowed.expand_as(scores)
        has_key = allowed.any(dim=-1, keepdim=True)  # (B, H, T, 1)
        scores = scores.masked_fill(~allowed, -math.inf)
        # A row of only -inf would give NaN; give it finite scores and zero its weights afterwards.
        scores = scores.masked_fill(~has_key, 0.0)
        weights = scores.softmax(dim=-1) * has_key
    out = torch.einsum("bhts,bhsv->bhtv", weights, v)
    return out, weights


@torch.no_grad()
def perturb_(module: nn.Module, std: float = 0.1) -> nn.Module:
    """Add noise to every parameter, so zero biases and unit norm weights cannot hide a mix-up."""
    for param in module.parameters():
        param.add_(torch.randn_like(param) * std)
    return module


@torch.no_grad()
def copy_mha(src: nn.MultiheadAttention, dst: MultiHeadAttention) -> None:
    """Copy torch's packed or separate q/k/v projections into attnkit's q_proj, k_proj, v_proj."""
    if src.in_proj_weight is not None:  # kdim == vdim == embed_dim: one packed (3E, E) matrix
        weights = src.in_proj_weight.chunk(3)
    else:
        weights = (src.q_proj_weight, src.k_proj_weight, src.v_proj_weight)
    projections = (dst.q_proj, dst.k_proj, dst.v_proj)
    for proj, weight in zip(projections, weights, strict=True):
        proj.weight.copy_(weight)
    if src.in_proj_bias is not None:
        for proj, bias in zip(projections, src.in_proj_bias.chunk(3), strict=True):
            proj.bias.copy_(bias)
    dst.out_proj.load_state_dict(src.out_proj.state_dict())


def copy_layer(src: nn.TransformerEncoderLayer | nn.TransformerDecoderLayer, dst: EncoderLayer | DecoderLayer) -> None:
    """Copy a torch encoder/decoder layer's weights into the matching attnkit layer."""
    copy_mha(src.self_attn, dst.self_attn)
    dst.ffn.up_proj.load_state_dict(src.linear1.state_dict())
    dst.ffn.down_proj.load_state_dict(src.linear2.state_dict())
    dst.attn_norm.load_state_dict(src.norm1.state_dict())
    if isinstance(src, nn.TransformerDecoderLayer):
        assert isinstance(dst, DecoderLayer)
        copy_mha(src.multihead_attn, dst.cross_attn)
        dst.cross_attn_norm.load_state_dict(src.norm2.state_dict())
        dst.ffn_norm.load_state_dict(src.norm3.state_dict())
    else:
        assert isinstance(dst, EncoderLayer)
        dst.ffn_norm.load_state_dict(src.norm2.state_dict())


def copy_stack(src: nn.TransformerEncoder | nn.TransformerDecoder, dst: Encoder | Decoder) -> None:
    """Copy every layer and the final norm of a torch encoder/decoder stack."""
    assert len(src.layers) == len(dst.layers)
    for src_layer, dst_layer in zip(src.layers, dst.layers, strict=True):
        copy_layer(src_layer, dst_layer)
    assert (src.norm is None) == (dst.final_norm is None)
    if src.norm is not None:
        dst.final_norm.load_state_dict(src.norm.state_dict())
