"""Evaluation metrics computed from predictions and targets (tensors), checked against hand counts."""

from __future__ import annotations

import torch
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, n_classes: int) -> Tensor:
    """counts[i, j] = examples of true class i predicted as j; (C, C) long."""
    index = target.long() * n_classes + pred.long()
    return torch.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_report(pred: Tensor, target: Tensor, n_classes: int) -> dict[str, object]:
    """Accuracy, macro-F1, and per-class precision, recall, F1 and support.

    A class never predicted has precision 0; a class absent from the targets is left out of the
    macro average (its recall is undefined), as scikit-learn does with `labels` unset.
    """
    counts = confusion_matrix(pred, target, n_classes).double()
    true_pos = counts.diag()
    support = counts.sum(dim=1)  # examples per true class
    predicted = counts.sum(dim=0)
    precision = torch.where(predicted > 0, true_pos / predicted.clamp(min=1), torch.zeros_like(true_pos))
    recall = torch.where(support > 0, true_pos / support.clamp(min=1), torch.zeros_like(true_pos))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(denom))
    present = support > 0
    return {
        "accuracy": float(true_pos.sum() / counts.sum().clamp(min=1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.long().tolist(),
        "confusion": counts.long().tolist(),
    }
