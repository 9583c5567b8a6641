"""What SASRec optimises (BCE with sampled negatives, full softmax, or both) and how it is ranked.

Two protocols rank each user's held-out item: sampled (the paper's, among 100 negatives drawn
uniformly from outside the user's training history) and full (among all items but the history).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.engine import unwrap
from attnkit.nn import linear_cross_entropy

Loss = Literal["bce", "ce", "ce+bce"]
K = 10


def describe(protocol: str, n_items: int, negatives: int, seed: int) -> str:
    """The evaluation protocol in words, printed and saved next to every figure."""
    if protocol == "sampled":
        return (
            f"sampled: target among {negatives} negatives drawn uniformly with replacement from items "
            f"outside the user's training history, seed {seed}, all users"
        )
    return f"full: target ranked among all {n_items:,} items minus those in the user's history, all users"


def rank_metrics(ranks: Tensor, prefix: str, k: int = K) -> dict[str, float]:
    """HR@k, NDCG@k and MRR from 0-based ranks (N,) of the held-out items."""
    ranks = ranks.double()
    hit = ranks < k
    return {
        f"{prefix}_hr@{k}": float(hit.double().mean()),
        f"{prefix}_ndcg@{k}": float((hit / torch.log2(ranks + 2)).mean()),
        f"{prefix}_mrr": float((1.0 / (ranks + 1)).mean()),
    }


def sample_negatives(seen: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Items drawn uniformly with replacement from those not marked in `seen`.

    Args:
        seen: (B, N + 1) bool, True at items a row must not draw (column 0, padding, always excluded).
        count: draws per row.
    Returns:
        (B, count) item ids; 0 where a row has no item left to draw.
    """
    rows, width = seen.size(0), seen.size(1)
    seen = seen.clone()
    seen[:, 0] = True
    possible = ~seen.all(dim=1)  # (B,)
    out = torch.randint(1, width, (rows, count), generator=generator, device=seen.device)
    bad = seen.gather(1, out) & possible[:, None]
    while bool(bad.any()):  # rejection: each round redraws only the collisions
        out[bad] = torch.randint(1, width, (int(bad.sum()),), generator=generator, device=seen.device)
        bad = seen.gather(1, out) & possible[:, None]
    out[~possible] = 0
    return out


def seen_matrix(histories: Tensor, n_items: int) -> Tensor:
    """histories (B, L) item ids (0 = padding) -> (B, N + 1) bool, True at every item present."""
    seen = torch.zeros(histories.size(0), n_items + 1, dtype=torch.bool, device=histories.device)
    return seen.scatter_(1, histories, True)


def seen_so_far(inputs: Tensor) -> Tensor:
    """inputs (B, L) -> (B, L, L): at [b, t], the items of row b up to position t, 0 after it (and at padding)."""
    length = inputs.size(1)
    later = torch.ones(length, length, dtype=torch.bool, device=inputs.device).triu(1)  # (t, s): s > t
    return inputs[:, None, :].expand(-1, length, -1).masked_fill(later, 0)


class RecommendTask:
    """Next-item loss (the paper's BCE with sampled negatives, full softmax CE, or both) and ranking metrics.

    Args:
        loss: "bce", "ce" or "ce+bce" (CE + bce_weight · BCE).
        n_items: items V (ids 1..V; 0 is padding).
        bce_weight: weight of the BCE term of "ce+bce".
        exclude_seen: CE's softmax at position t leaves out the input items up to t (the history the
            model has seen there), except the target itself.
    """

    def __init__(self, loss: Loss, n_items: int, bce_weight: float = 1.0, exclude_seen: bool = False) -> None:
        self.loss_kind, self.n_items, self.bce_weight = loss, n_items, bce_weight
        self.exclude_seen = exclude_seen

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        states = model(batch["input"])  # (B, L, D)
        target = batch["target"]  # (B, L), 0 at padding
        real = target != 0
        states_real, target_real = states[real], target[real]  # (N, D), (N,)
        sasrec = unwrap(model)
        loss = states.new_zeros(())
        if self.loss_kind in ("ce", "ce+bce"):
            # Softmax over the real items 1..V (row 0 of the table is padding), chunk by chunk.
            exclude = seen_so_far(batch["input"])[real] - 1 if self.exclude_seen else None  # (N, L), -1 = none
            loss = loss + linear_cross_entropy(
                states_real, sasrec.item_embed.weight[1:], target_real - 1, exclude=exclude
            )
        if self.loss_kind in ("bce", "ce+bce"):
            seen = seen_matrix(batch["history"], self.n_items)  # (B, V + 1)
            negatives = sample_negatives(seen, target.size(1))[real]  # (N,)
            pos = sasrec.score(states_real, target_real[:, None]).squeeze(-1).float()  # (N,)
            neg = sasrec.score(states_real, negatives[:, None]).squeeze(-1).float()
            has_negative = negatives != 0
            bce = -(F.logsigmoid(pos) + F.logsigmoid(-neg) * has_negative).mean()
            loss = loss + (bce if self.loss_kind == "bce" else self.bce_weight * bce)
        return loss, int(real.sum())

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        sasrec = unwrap(model)
        last = sasrec(batch["input"])[:, -1]  # (B, D)
        scores = sasrec.score_all(last).float()  # (B, V + 1)
        target = batch["target"]
        target_score = scores.gather(1, target[:, None])  # (B, 1)
        negatives = batch["negatives"]  # (B, K_neg)
        sampled_rank = ((scores.gather(1, negatives) > target_score) & (negatives != 0)).sum(dim=1)
        excluded = seen_matrix(batch["seen"], self.n_items)
        excluded[:, 0] = True
        excluded.scatter_(1, target[:, None], False)  # a re-consumed target still counts
        full_rank = ((scores > target_score) & ~excluded).sum(dim=1)
        return {"sampled_rank": sampled_rank, "full_rank": full_rank}

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        return {**rank_metrics(rows["sampled_rank"], "sampled"), **rank_metrics(rows["full_rank"], "full")}


def report(metrics: dict[str, float], split: str, n_items: int, negatives: int, eval_seed: int, log: Any) -> None:
    """Print each protocol's figures under its description."""
    for protocol in ("sampled", "full"):
        if f"{protocol}_hr@{K}" not in metrics:
            continue
        shown = [
            f"HR@{K} {metrics[f'{protocol}_hr@{K}']:.4f}",
            f"NDCG@{K} {metrics[f'{protocol}_ndcg@{K}']:.4f}",
            f"MRR {metrics[f'{protocol}_mrr']:.4f}",
        ]
        log(f"{split} [{describe(protocol, n_items, negatives, eval_seed)}]")
        log("  " + "  ".join(shown))
