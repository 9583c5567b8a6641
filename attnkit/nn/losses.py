"""Cross-entropy over a large output layer without materialising all the logits at once.

`linear_cross_entropy(h, W, y)` equals `F.cross_entropy(h @ W.T, y)`, but works through the rows
of h a chunk at a time and computes the gradients with respect to h and W in the same pass (the
softmax minus the one-hot target, multiplied back through the chunk), as Liger-Kernel's fused
linear cross-entropy and Wijmans et al. 2024 ("Cut Your Losses in Large-Vocabulary Language
Models") do. Peak memory is O(chunk · V) instead of O(N · V), and each chunk's logits are used
while they are still in cache. On CPU this also avoids a fresh, page-faulting allocation of the
whole (N, V) matrix at every step.
"""

from __future__ import annotations

import torch
from torch import Tensor


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    exclude: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Mean cross-entropy of the logits `hidden @ weight.T (+ bias)` against `target`.

    Under autocast the products run in its dtype, as `hidden @ weight.T` would there, and the
    softmax and the loss in float32, as autocast runs `cross_entropy`; gradients come back in the
    inputs' dtypes.

    Args:
        hidden: (N, D) states.
        weight: (V, D) output projection (e.g. a tied embedding table).
        target: (N,) class ids in [0, V), or `ignore_index` for rows that do not count.
        bias: optional (V,) output bias.
        label_smoothing: ε as in `torch.nn.functional.cross_entropy`: the target distribution is
            (1 - ε) one-hot + ε / V uniform (Szegedy et al. 2016; the Transformer paper uses 0.1).
        ignore_index: target value of rows that are left out of the loss and of its mean.
        exclude: (N, K) classes to leave out of each row's softmax, as if their logits were -inf
            (e.g. the items a user has already seen, which a recommender is never asked to rank);
            entries < 0, and a row's own target, are left in. Not with label smoothing.
        chunk_size: rows per chunk (default: about 16 MiB of float32 logits per chunk).
    Returns:
        scalar loss, averaged over the rows that count (NaN when none does, as PyTorch).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.size(1) != weight.size(1):
        raise ValueError(
            f"expected hidden (N, D) and weight (V, D), got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if target.shape != hidden.shape[:1]:
        raise ValueError(f"target must be (N,) = ({hidden.size(0)},), got {tuple(target.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if exclude is not None:
        if exclude.dim() != 2 or exclude.size(0) != hidden.size(0):
            raise ValueError(f"exclude must be (N, K) with N = {hidden.size(0)}, got {tuple(exclude.shape)}")
        if label_smoothing:
            raise ValueError("exclude and label_smoothing cannot be combined")
    chunk = chunk_size or max(16, (1 << 22) // weight.size(0))
    return _LinearCrossEntropy.apply(hidden, weight, bias, target, label_smoothing, ignore_index, exclude, chunk)


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and, when needed, the gradients; backward only scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, smoothing, ignore_index, exclude, chunk):
        n_rows, n_classes = hidden.size(0), weight.size(0)
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32  # accumulation dtype
        # Under autocast the products run in its dtype, as `h @ W.T` would; the casts are made once
        # here rather than by autocast in every chunk (casting the V x D weight once per chunk took
        # about a tenth of a bfloat16 Translator step).
        device = hidden.device.type
        compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        counts = target != ignore_index  # (N,)
        n_counted = counts.sum()
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=acc) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros(n_classes, dtype=acc, device=weight.device) if ctx.needs_input_grad[2] else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        with torch.autocast(device, enabled=False):
            hidden_c, weight_c = hidden.to(compute), weight.to(compute)  # (N, D), (V, D)
            for start in range(0, n_rows, chunk):
                h = hidden_c[start : start + chunk]  # (C, D)
                keep = counts[start : start + chunk]  # (C,)
                y = target[start : start + chunk].masked_fill(~keep, 0)[:, None]  # (C, 1)
                logits = h @ weight_c.T  # (C, V), in the compute dtype
                if bias is not None or exclude is not None:
                    logits = logits.to(acc)
                if bias is not None:
                    logits += bias.to(acc)
                if exclude is not None:
                    _leave_out(logits, exclude[start : start + chunk], y)
                log_probs = torch.log_softmax(logits, dim=-1, dtype=acc)  # (C, V)
                del logits
                nll = -log_probs.gather(1, y)  # (C, 1)
                if smoothing:  # the uniform part of the target: -mean_j log p_j
                    nll = (1 - smoothing) * nll - smoothing * log_probs.mean(dim=-1, keepdim=True)
                total += (nll.squeeze(1) * keep).sum()
                if not need_grad:
                    continue
                probs = log_probs.exp_()  # (C, V): softmax, in place; d loss / d logits = p - target
                probs.scatter_add_(1, y, torch.full(y.shape, smoothing - 1.0, dtype=acc, device=y.device))
                if not bool(keep.all()):
                    probs[~keep] = smoothing / n_classes  # zero after the uniform part is taken off
                grad = torch.empty(probs.shape, dtype=compute, device=probs.device)
                torch.sub(probs, smoothing / n_classes, out=grad)  # the shift and the cast in one call
                del probs
                if grad_hidden is not None:
                    grad_hidden[start : start + chunk] = grad @ weight_c
                if grad_weight is not None:
                    grad_weight += (grad.T @ h).to(acc)
                if grad_bias is not None:
                    grad_bias += grad.to(acc).sum(dim=0)
        scale = 1.0 / n_counted.clamp(min=1).to(acc)
        ctx.save_for_backward(
            *(g if g is not None else torch.empty(0) for g in (grad_hidden, grad_weight, grad_bias)), scale
        )
        ctx.has = (grad_hidden is not None, grad_weight is not None, grad_bias is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return torch.where(n_counted > 0, total * scale, torch.full_like(total, float("nan")))

    @staticmethod
    def backward(ctx, grad_loss):
        *grads, scale = ctx.saved_tensors
        factor = grad_loss * scale
        scaled = [
            (g * factor).to(dtype) if has else None for g, has, dtype in zip(grads, ctx.has, ctx.dtypes, strict=True)
        ]
        return scaled[0], scaled[1], scaled[2], None, None, None, None, None


def _leave_out(logits: Tensor, exclude: Tensor, target: Tensor) -> None:
    """Set logits (C, V) to -inf, in place, at exclude (C, K), except entries < 0 and each row's target (C, 1)."""
    exclude = torch.where((exclude < 0) | (exclude == target), target, exclude)  # no-ops aim at the target
    target_logit = logits.gather(1, target)  # (C, 1)
    logits.scatter_(1, exclude, float("-inf"))
    logits.scatter_(1, target, target_logit)
