"""Batches of similar length, deterministic per (seed, epoch), and padding to the longest item."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def length_bucketed_plan(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    pool: int = 50,
) -> Callable[[int], list[list[int]]]:
    """A plan: epoch -> batches of example indices.

    With `shuffle`, examples are shuffled, cut into pools of `pool` batches, sorted by length
    within a pool (so a batch pads little) and the batches shuffled again; the order depends only
    on (seed, epoch). Without, batches are consecutive runs of the examples sorted by length.
    """
    lengths = np.asarray(lengths)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def plan(epoch: int) -> list[list[int]]:
        if not shuffle:
            order = np.argsort(lengths, kind="stable")
            return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(lengths))
        batches = []
        span = batch_size * pool
        for start in range(0, len(order), span):
            chunk = order[start : start + span]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    return plan


def token_bucketed_plan(
    lengths: Sequence[int],
    max_tokens: int,
    *,
    shuffle: bool,
    seed: int = 0,
    pool: int = 100,
) -> Callable[[int], list[list[int]]]:
    """A plan whose batches hold at most `max_tokens` tokens, padding included (fairseq's batching).

    Examples are sorted by length (within pools of `pool` average batches when shuffling, as in
    `length_bucketed_plan`) and cut greedily into batches of `count · longest <= max_tokens`; an
    example longer than `max_tokens` gets a batch of its own. The order depends only on (seed, epoch).
    """
    lengths = np.asarray(lengths)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")

    def cut(order: np.ndarray) -> list[list[int]]:
        batches, current, longest = [], [], 0
        for index in order.tolist():
            grown = max(longest, int(lengths[index]))
            if current and grown * (len(current) + 1) > max_tokens:
                batches.append(current)
                current, grown = [], int(lengths[index])
            current.append(index)
            longest = grown
        if current:
            batches.append(current)
        return batches

    def plan(epoch: int) -> list[list[int]]:
        if not shuffle:
            return cut(np.argsort(lengths, kind="stable"))
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(lengths))
        mean = max(1, int(lengths.mean())) if len(lengths) else 1
        span = max(1, pool * max_tokens // mean)
        batches = []
        for start in range(0, len(order), span):
            chunk = order[start : start + span]
            batches += cut(chunk[np.argsort(lengths[chunk], kind="stable")])
        return [batches[i] for i in rng.permutation(len(batches))]

    return plan


def pad(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> torch.Tensor:
    """Right-pad id lists to the longest one: (B, L) long (L at least 1)."""
    width = max((len(s) for s in sequences), default=0)
    if width == 0:
        return torch.full((len(sequences), 1), pad_id, dtype=torch.long)
    # One tensor from padded lists: a copy per row into a preallocated tensor cost 4x as much.
    return torch.tensor([[*s, *([pad_id] * (width - len(s)))] for s in sequences], dtype=torch.long)
