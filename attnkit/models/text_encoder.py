"""A Transformer encoder over token ids, BERT-style (Devlin et al. 2019; the encoder of Vaswani et al.
2017, "Attention Is All You Need", §3.1).

The `attnkit.nn` pieces, in reading order (there is no head: the models that use it add one):

    token embedding (torch `nn.Embedding`, padding row zero)
    -> positions (`LearnedPositionalEmbedding`, or `SinusoidalPositionalEncoding` with embeddings
       scaled by sqrt(d_model)), `Dropout`
    -> blocks (`Encoder`: `EncoderLayer`s of `MultiHeadAttention` and `FeedForward`, bidirectional,
       padding hidden from attention)
    -> norm (the `Encoder`'s final norm when pre-norm; post-norm layers end normalised).

The shared body of `TextClassifier` and `MaskedLanguageModel`, so a classifier can start from an
encoder pre-trained as a masked language model on the corpus's own text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attnkit.nn import Encoder, LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from attnkit.nn.config import DictConfig
from attnkit.nn.dropout import Dropout
from attnkit.nn.feedforward import Activation
from attnkit.nn.norms import NormKind


@dataclass(frozen=True, kw_only=True)
class TextEncoderConfig(DictConfig):
    """Sizes and choices of a text encoder.

    Fields:
        vocab_size: tokens in the vocabulary (specials included).
        d_model, n_heads, n_layers, d_ff: sizes.
        dropout: on embeddings and sub-layer outputs; attention_dropout: on attention weights.
        max_len: longest input in tokens.
        norm_first: pre-norm (True, trains stably without long warm-up) or post-norm.
        activation, norm: feed-forward activation and norm kind.
        positional: "learned" or "sinusoidal".
        pad_id: padding id.
        eps: the layer norms' epsilon (BERT: 1e-12).
        type_vocab_size: segment (token type) embeddings, as BERT's sentence A/B; 0 = none.
        embed_norm: a LayerNorm on the summed embeddings, before dropout (BERT).
    """

    vocab_size: int
    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    max_len: int = 512
    norm_first: bool = True
    activation: Activation = "gelu"
    norm: NormKind = "layer"
    positional: Literal["learned", "sinusoidal"] = "learned"
    pad_id: int = 0
    eps: float = 1e-5
    type_vocab_size: int = 0
    embed_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        if self.positional not in ("learned", "sinusoidal"):
            raise ValueError(f"positional must be learned or sinusoidal, got {self.positional!r}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id={self.pad_id} is outside the vocabulary of {self.vocab_size}")
        for name in ("dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


class TextEncoder(nn.Module):
    """ids (B, L) -> hidden states (B, L, D), with padding hidden from attention.

    Args:
        config: TextEncoderConfig.
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        if config.positional == "learned":
            self.pos = LearnedPositionalEmbedding(config.max_len, config.d_model)
        else:
            self.pos = SinusoidalPositionalEncoding(config.d_model, config.max_len)
        self.dropout = Dropout(config.dropout)
        self.encoder = Encoder(
            config.d_model,
            config.n_heads,
            config.d_ff,
            config.n_layers,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            activation=config.activation,
            norm=config.norm,
            norm_first=config.norm_first,
            eps=config.eps,
        )
        self.type_embed = nn.Embedding(config.type_vocab_size, config.d_model) if config.type_vocab_size else None
        self.embed_norm = nn.LayerNorm(config.d_model, eps=config.eps) if config.embed_norm else None
        nn.init.normal_(self.embed.weight, std=0.02)
        self.embed.weight.data[config.pad_id].zero_()

    def forward(self, ids: Tensor, segments: Tensor | None = None, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """ids (B, L) -> (hidden (B, L, D), keep (B, L) True at real tokens).

        segments: (B, L) token type ids (0 = first sentence) when the config has `type_vocab_size`;
            None = all 0. keep: (B, L) bool, the real tokens, when padding is not `pad_id` alone."""
        if keep is None:
            keep = ids != self.config.pad_id  # (B, L)
        x = self.embed(ids)
        if self.config.positional == "sinusoidal":
            x = x * math.sqrt(self.config.d_model)
        x = self.pos(x)  # (B, L, D)
        if self.type_embed is not None:
            x = x + self.type_embed(torch.zeros_like(ids) if segments is None else segments)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.encoder(self.dropout(x), keep=keep), keep
