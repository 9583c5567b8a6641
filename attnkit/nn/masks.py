"""Boolean attention masks in the "may attend" convention (True = this query may look at this key).

This is the polarity of `torch.nn.functional.scaled_dot_product_attention`; it is the opposite of
`torch.nn.MultiheadAttention`'s `key_padding_mask`, where True means "blocked".
"""

from __future__ import annotations

import torch
from torch import Tensor


def padding_mask(
    ids: Tensor | None = None,
    pad_id: int = 0,
    *,
    lengths: Tensor | None = None,
    max_len: int | None = None,
) -> Tensor:
    """Mark the real (non-padding) tokens of a right- or left-padded batch.

    Give either `ids` (with `pad_id`) or `lengths` (with an optional `max_len`).

    Args:
        ids: token ids (B, L).
        pad_id: the id used for padding.
        lengths: number of real tokens per sequence (B,), padding assumed on the right.
        max_len: width L of the mask built from `lengths` (default: the longest length).

    Returns:
        keep (B, L) bool, True at real tokens. `keep[:, None, None, :]` broadcasts to an
        attention mask (B, H, Lq, Lk) that hides padded keys.
    """
    if (ids is None) == (lengths is None):
        raise ValueError("padding_mask: give exactly one of `ids` or `lengths`")
    if ids is not None:
        if ids.dim() != 2:
            raise ValueError(f"padding_mask: ids must be (B, L), got shape {tuple(ids.shape)}")
        return ids != pad_id
    if lengths.dim() != 1:
        raise ValueError(f"padding_mask: lengths must be (B,), got shape {tuple(lengths.shape)}")
    if (lengths < 0).any():
        raise ValueError("padding_mask: lengths must be non-negative")
    longest = int(lengths.max()) if lengths.numel() else 0
    width = longest if max_len is None else max_len
    if width < longest:
        raise ValueError(f"padding_mask: max_len={width} is shorter than the longest length {longest}")
    positions = torch.arange(width, device=lengths.device)  # (L,)
    return positions[None, :] < lengths[:, None]  # (B, L)


def causal_mask(
    q_len: int,
    k_len: int | None = None,
    *,
    offset: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Let each query attend to itself and to earlier positions only.

    Query i sits at absolute position `offset + i`; key j at position j. Query i may attend key j
    when `j <= offset + i`. During cached decoding the new queries come after the `offset` keys
    already in the cache, so the default offset is `k_len - q_len` (the queries are the last ones).

    Args:
        q_len: number of queries T.
        k_len: number of keys S (default T).
        offset: absolute position of the first query (default S - T).
        device: where to build the mask.

    Returns:
        (T, S) bool mask, True = may attend.
    """
    k_len = q_len if k_len is None else k_len
    offset = k_len - q_len if offset is None else offset
    q_pos = torch.arange(q_len, device=device)[:, None] + offset  # (T, 1)
    k_pos = torch.arange(k_len, device=device)[None, :]  # (1, S)
    return k_pos <= q_pos  # (T, S)
