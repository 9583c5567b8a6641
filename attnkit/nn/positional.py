"""Position information for attention, which is otherwise blind to order.

Sinusoidal encodings (Vaswani et al. 2017, §3.5), learned absolute embeddings (as in BERT/GPT),
and rotary embeddings (RoPE, Su et al. 2021, "RoFormer"), which rotate queries and keys so that
their dot product depends only on the offset between positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, d_model: int, layout: str = "interleaved") -> Tensor:
    """The paper's table: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same).

    layout "split" puts the same sines in the first half and the cosines in the second (tensor2tensor's
    and Marian's arrangement: a fixed permutation of the features).

    Returns:
        (max_len, d_model) float32.
    """
    if d_model % 2:
        raise ValueError(f"sinusoidal encodings need an even d_model, got {d_model}")
    position = torch.arange(max_len, dtype=torch.float64)[:, None]  # (L, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    if layout == "split":
        table[:, : d_model // 2] = torch.sin(position * inv_freq)  # (L, D/2)
        table[:, d_model // 2 :] = torch.cos(position * inv_freq)
    elif layout == "interleaved":
        table[:, 0::2] = torch.sin(position * inv_freq)  # (L, D/2)
        table[:, 1::2] = torch.cos(position * inv_freq)
    else:
        raise ValueError(f"layout must be interleaved or split, got {layout!r}")
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the paper's fixed sinusoidal encodings to embeddings; no parameters.

    Args:
        d_model: model width D (even).
        max_len: longest sequence supported.
        layout: "interleaved" (the paper's sin, cos, sin, ...) or "split" (sines, then cosines).
    """

    def __init__(self, d_model: int, max_len: int = 1024, layout: str = "interleaved") -> None:
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoidal_table(max_len, d_model, layout), persistent=False)

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        """x (B, L, D) -> x + PE[offset : offset + L]; `offset` is the first position (cached decoding),
        an int or a 0-d tensor (`StaticKVCache.offset`)."""
        return x + _rows(self.table, offset, x.size(1), self.max_len).to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """Adds a trained vector per absolute position (BERT, GPT-2, SASRec, ViT).

    Args:
        max_len: number of positions.
        d_model: model width D.
    """

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        """x (B, L, D) -> x + P[offset : offset + L]; offset an int or a 0-d tensor."""
        return x + _rows(self.weight, offset, x.size(1), self.max_len)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding applied to per-head queries and keys.

    Pairs feature i with feature i + D/2 ("rotate half", as GPT-NeoX and Llama do; RoFormer pairs
    neighbours 2i, 2i+1 — a fixed permutation of the same thing) and rotates each pair by the angle
    position * base^(-2i/D).

    Args:
        head_dim: per-head width D (even).
        max_len: longest sequence supported.
        base: the frequency base (10000 in the paper).
    """

    def __init__(self, head_dim: int, max_len: int = 4096, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
        self.max_len = max_len
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (D/2,)
        angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq  # (L, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (L, D)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        """x (B, H, L, D) at positions offset..offset+L-1 (offset an int or a 0-d tensor) -> rotated x,
        same shape."""
        length = x.size(-2)
        cos = _rows(self.cos, offset, length, self.max_len).to(x.dtype)  # (L, D)
        sin = _rows(self.sin, offset, length, self.max_len).to(x.dtype)
        first, second = x.chunk(2, dim=-1)  # (B, H, L, D/2) each
        rotated_half = torch.cat([-second, first], dim=-1)  # (B, H, L, D)
        return x * cos + rotated_half * sin


def _rows(table: Tensor, offset: int | Tensor, length: int, max_len: int) -> Tensor:
    """table[offset : offset + length] (length, D). An int offset is checked against max_len; a
    tensor offset (a compiled decoding step's position) is gathered without reading it back, and
    the caller keeps it in range."""
    if isinstance(offset, Tensor):
        return table.index_select(0, offset + torch.arange(length, device=table.device))
    if offset + length > max_len:
        raise ValueError(f"sequence reaches position {offset + length - 1} but max_len is {max_len}; raise max_len")
    return table[offset : offset + length]
