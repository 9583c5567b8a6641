"""What classification optimises and reports, for the engine: single-label softmax or multi-label sigmoids."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.tokenizer import PAD_ID
from attnkit.metrics import classification_report, multilabel_report


class ClassifyTask:
    """Cross-entropy of class logits, accuracy and macro-F1, for the engine.

    The model reads `batch[input_key]`; `VisionTask` reads images instead of token ids.

    Args:
        label_smoothing: spread this much of each target's probability over all classes.
    """

    input_key = "ids"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def count(self, batch: dict[str, Tensor]) -> int:
        """What the engine's throughput counts: real (non-padding) tokens."""
        return int((batch["ids"] != PAD_ID).sum())

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        logits = model(batch[self.input_key]).float()  # (B, C)
        return F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing), self.count(batch)

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = model(batch[self.input_key]).float()  # (B, C)
        return {
            "pred": logits.argmax(dim=-1),
            "label": batch["label"],
            "loss": F.cross_entropy(logits, batch["label"], reduction="none"),
        }

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        n_classes = int(max(rows["pred"].max(), rows["label"].max())) + 1
        report = classification_report(rows["pred"], rows["label"], n_classes)
        return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "loss": float(rows["loss"].mean())}


class MultiLabelTask(ClassifyTask):
    """Loss and metrics of multi-label classification: one independent sigmoid per class.

    Args:
        threshold: a class is predicted when its probability reaches it.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        logits = model(batch[self.input_key]).float()  # (B, C)
        return F.binary_cross_entropy_with_logits(logits, batch["label"]), self.count(batch)

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = model(batch[self.input_key]).float()  # (B, C)
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"], reduction="none").mean(dim=-1)  # (B,)
        return {"pred": logits.sigmoid() >= self.threshold, "label": batch["label"] > 0.5, "loss": loss}

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        report = multilabel_report(rows["pred"], rows["label"])
        return {
            "accuracy": report["accuracy"],
            "micro_f1": report["micro_f1"],
            "macro_f1": report["macro_f1"],
            "loss": float(rows["loss"].mean()),
        }


def prediction_rows(
    model: nn.Module | Callable[[Tensor], Tensor], ids: Tensor, threshold: float | None = None
) -> dict[str, Tensor]:
    """What a classifier (`model`: ids -> logits (B, C)) predicts for ids (B, L).

    Single-label (no `threshold`): pred (B,) the most probable class, prob (B,) its probability,
    probs (B, C) the softmax. Multi-label: probs and prob (B, C) one sigmoid per class, pred (B, C)
    bool where a probability reaches `threshold`.
    """
    logits = model(ids).float()  # (B, C)
    if threshold is None:
        probs = logits.softmax(dim=-1)
        return {"pred": probs.argmax(dim=-1), "prob": probs.max(dim=-1).values, "probs": probs}
    probs = logits.sigmoid()
    return {"pred": probs >= threshold, "prob": probs, "probs": probs}
