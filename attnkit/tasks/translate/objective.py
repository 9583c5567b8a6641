"""What translation optimises: label-smoothed cross-entropy of the next target token, chunk by chunk
through the tied output layer, and the validation loss and perplexity."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnkit.data.tokenizer import PAD_ID
from attnkit.engine import unwrap
from attnkit.nn import linear_cross_entropy


class TranslateTask:
    """Label-smoothed cross-entropy of the next target token; validation loss and perplexity."""

    def __init__(self, label_smoothing: float, pad_id: int = PAD_ID) -> None:
        self.label_smoothing, self.pad_id = label_smoothing, pad_id

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        hidden = model(batch["src"], batch["tgt_in"])  # (B, T, D): `Translator.hidden` via forward_hidden
        real = batch["tgt_out"] != self.pad_id  # (B, T)
        head = unwrap(model).lm_head  # weight (V, D), and a bias for Marian's final_logits_bias
        loss = linear_cross_entropy(
            hidden[real], head.weight, batch["tgt_out"][real], bias=head.bias, label_smoothing=self.label_smoothing
        )
        return loss, int(real.sum())

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        translator = unwrap(model)
        logits = translator.lm_head(model(batch["src"], batch["tgt_in"])).float()  # (B, T, V)
        target = batch["tgt_out"]
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), target, ignore_index=self.pad_id, reduction="none"
        )  # (B, T)
        return {"nll": nll.sum(dim=1), "tokens": (target != self.pad_id).sum(dim=1)}

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        loss = float(rows["nll"].sum() / rows["tokens"].sum().clamp(min=1))
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}


# ---------------------------------------------------------------------------------------- data
