"""A Transformer-encoder text classifier, in the manner of BERT's sequence classification (Devlin et
al. 2019, §4.1): an encoder over the tokens, one vector per text, a linear layer to class logits.

The `attnkit.nn` pieces, in reading order (embedding to norm are the `TextEncoder` body, which can
start from a `MaskedLanguageModel` pre-trained on the corpus):

    token embedding (torch `nn.Embedding`; in training optionally word dropout, `drop_tokens`)
    -> positions (`LearnedPositionalEmbedding` or `SinusoidalPositionalEncoding`), `Dropout`
    -> blocks (`Encoder`: `EncoderLayer`s of `MultiHeadAttention` and `FeedForward`, padding hidden)
    -> norm (the `Encoder`'s final norm when pre-norm)
    -> pooling ([CLS] state or masked mean) -> head (`Dropout`, then a linear layer).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

# moved to attnkit.models.mlm; re-exported until the tasks import it from there
from attnkit.models.mlm import MaskedLanguageModel as MaskedLanguageModel
from attnkit.models.text_encoder import TextEncoder, TextEncoderConfig
from attnkit.nn.dropout import Dropout

Pooling = Literal["cls", "mean", "pooler"]


def drop_tokens(ids: Tensor, p: float, pad_id: int) -> Tensor:
    """ids (B, L) with each real token but the first turned into `pad_id` with probability p.

    Word dropout: padding is skipped by attention and pooling, so the dropped words are gone from
    the text; keeping the first token means no text loses all of its tokens.
    """
    drop = (torch.rand(ids.shape, device=ids.device) < p) & (ids != pad_id)  # (B, L)
    drop[:, 0] = False
    return ids.masked_fill(drop, pad_id)


class TextClassifier(nn.Module):
    """ids (B, L) -> class logits (B, C).

    Args:
        config: the encoder's configuration.
        n_classes: number of classes C.
        pooling: "cls" takes the first position's state (inputs must start with [CLS]); "mean"
            averages the states of real tokens only; "pooler" is BERT's: a dense layer and tanh on
            the [CLS] state (`self.pooler`).
        head_dropout: dropout before the output layer.
        token_dropout: in training, `drop_tokens` with this probability: a regulariser for small
            text datasets that a model otherwise memorises in a few epochs.
    """

    def __init__(
        self,
        config: TextEncoderConfig,
        n_classes: int,
        *,
        pooling: Pooling = "mean",
        head_dropout: float = 0.1,
        token_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean", "pooler"):
            raise ValueError(f"pooling must be cls, mean or pooler, got {pooling!r}")
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        if not 0.0 <= token_dropout < 1.0:
            raise ValueError(f"token_dropout must be in [0, 1), got {token_dropout}")
        self.pooling = pooling
        self.token_dropout = token_dropout
        self.body = TextEncoder(config)
        self.pooler = (
            nn.Sequential(nn.Linear(config.d_model, config.d_model), nn.Tanh()) if pooling == "pooler" else None
        )
        self.dropout = Dropout(head_dropout)
        self.head = nn.Linear(config.d_model, n_classes)

    def forward(self, ids: Tensor, segments: Tensor | None = None) -> Tensor:
        """ids (B, L) -> logits (B, C); segments (B, L) as `TextEncoder`."""
        if self.training and self.token_dropout > 0:
            ids = drop_tokens(ids, self.token_dropout, self.body.config.pad_id)
        hidden, keep = self.body(ids, segments)  # (B, L, D), (B, L)
        if self.pooler is not None:
            pooled = self.pooler(hidden[:, 0])  # (B, D)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]  # (B, D)
        else:
            weights = keep.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, D)
        return self.head(self.dropout(pooled))
