"""The encoder-decoder Transformer of Vaswani et al. 2017, with the paper's base model as default."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from attnkit.nn.config import DictConfig
from attnkit.nn.dropout import Dropout
from attnkit.nn.feedforward import ACTIVATIONS, Activation
from attnkit.nn.norms import NormKind
from attnkit.nn.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from attnkit.nn.stacks import Decoder, DecoderCache, Encoder


@dataclass(frozen=True, kw_only=True)
class TransformerConfig(DictConfig):
    """Everything needed to rebuild a `Transformer`; defaults are the paper's base model (Table 3).

    Fields:
        src_vocab_size: source vocabulary (37,000 shared BPE tokens for WMT14 En-De in the paper).
        tgt_vocab_size: target vocabulary; None = the source vocabulary is shared with the target.
        d_model, n_heads, n_encoder_layers, n_decoder_layers, d_ff: sizes (512, 8, 6, 6, 2048).
        dropout: on embeddings + positions and on every sub-layer output (0.1).
        attention_dropout: on attention weights (the paper uses none).
        max_len: longest sequence the positional encodings cover.
        norm_first: pre-norm when True; the paper is post-norm.
        tie_embeddings: share the target embedding with the output projection and, when the
            vocabulary is shared, with the source embedding too (§3.4).
        pad_id: padding token id.
        activation, norm: feed-forward activation and norm kind ("relu", "layer" in the paper).
        positional: "sinusoidal" (the paper), "sinusoidal_split" (sines then cosines: Marian) or "learned".
        scale_embeddings: multiply embeddings by √d_model (§3.4).
        eps: the norms' epsilon.
        output_bias: a bias on the output layer (Marian's `final_logits_bias`).
    """

    src_vocab_size: int = 37000
    tgt_vocab_size: int | None = None
    d_model: int = 512
    n_heads: int = 8
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    attention_dropout: float = 0.0
    max_len: int = 1024
    norm_first: bool = False
    tie_embeddings: bool = True
    pad_id: int = 0
    activation: Activation = "relu"
    norm: NormKind = "layer"
    positional: Literal["sinusoidal", "sinusoidal_split", "learned"] = "sinusoidal"
    scale_embeddings: bool = True
    eps: float = 1e-5
    output_bias: bool = False

    def __post_init__(self) -> None:
        positive = ("src_vocab_size", "d_model", "n_heads", "d_ff", "max_len")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"TransformerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.tgt_vocab_size is not None and self.tgt_vocab_size <= 0:
            raise ValueError(f"TransformerConfig.tgt_vocab_size must be positive, got {self.tgt_vocab_size}")
        if self.n_encoder_layers < 0 or self.n_decoder_layers < 0:
            raise ValueError("TransformerConfig: layer counts must be >= 0")
        if self.d_model % self.n_heads:
            raise ValueError(f"TransformerConfig: n_heads={self.n_heads} must divide d_model={self.d_model}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TransformerConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"TransformerConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in ("layer", "rms", "batch"):
            raise ValueError(f"TransformerConfig.norm must be layer, rms or batch, got {self.norm!r}")
        if self.positional not in ("sinusoidal", "sinusoidal_split", "learned"):
            raise ValueError(
                f"TransformerConfig.positional must be sinusoidal, sinusoidal_split or learned, got {self.positional!r}"
            )
        if not 0 <= self.pad_id < min(self.src_vocab_size, self.tgt_vocab_size or self.src_vocab_size):
            raise ValueError(f"TransformerConfig.pad_id={self.pad_id} is outside the vocabulary")

    @property
    def shared_vocab(self) -> bool:
        """Source and target use one vocabulary."""
        return self.tgt_vocab_size is None


class Transformer(nn.Module):
    """Encoder-decoder Transformer: token ids in, next-token logits out.

    `encode` and `decode` are separate so decoding reuses the encoder output and the caches.

    Args:
        config: sizes and choices; `TransformerConfig()` is the paper's base model.
    """

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        config = TransformerConfig() if config is None else config
        self.config = config
        d_model, pad_id = config.d_model, config.pad_id
        tgt_vocab = config.src_vocab_size if config.shared_vocab else config.tgt_vocab_size
        self.src_embed = nn.Embedding(config.src_vocab_size, d_model, padding_idx=pad_id)
        if config.shared_vocab and config.tie_embeddings:
            self.tgt_embed = self.src_embed
        else:
            self.tgt_embed = nn.Embedding(tgt_vocab, d_model, padding_idx=pad_id)
        self.src_pos = self._positions(config)
        self.tgt_pos = self._positions(config)
        self.embed_dropout = Dropout(config.dropout)
        layer_args = dict(
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            activation=config.activation,
            norm=config.norm,
            norm_first=config.norm_first,
            eps=config.eps,
        )
        self.encoder = Encoder(d_model, config.n_heads, config.d_ff, config.n_encoder_layers, **layer_args)
        self.decoder = Decoder(d_model, config.n_heads, config.d_ff, config.n_decoder_layers, **layer_args)
        self.lm_head = nn.Linear(d_model, tgt_vocab, bias=config.output_bias)
        self._reset_parameters()
        if config.tie_embeddings:
            self.lm_head.weight = self.tgt_embed.weight

    @staticmethod
    def _positions(config: TransformerConfig) -> nn.Module:
        if config.positional in ("sinusoidal", "sinusoidal_split"):
            layout = "split" if config.positional == "sinusoidal_split" else "interleaved"
            return SinusoidalPositionalEncoding(config.d_model, config.max_len, layout)
        return LearnedPositionalEmbedding(config.max_len, config.d_model)

    def _reset_parameters(self) -> None:
        # Xavier for every matrix in the stacks (as the reference implementations do); embeddings
        # N(0, 1/d) so that after the √d scaling their entries have unit variance.
        for stack in (self.encoder, self.decoder):
            for name, param in stack.named_parameters():
                if param.dim() > 1:
                    nn.init.xavier_uniform_(param)
                elif name.endswith("bias") and "norm" not in name:
                    nn.init.zeros_(param)
        tables = (self.src_embed,) if self.tgt_embed is self.src_embed else (self.src_embed, self.tgt_embed)
        for embedding in tables:  # a tuple, not a set: a set's order (and so the draws) varies by process
            nn.init.normal_(embedding.weight, std=self.config.d_model**-0.5)
            embedding.weight.data[self.config.pad_id].zero_()
        nn.init.xavier_uniform_(self.lm_head.weight)
        if self.lm_head.bias is not None:
            nn.init.zeros_(self.lm_head.bias)

    def forward(self, src_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        """Teacher-forced logits: src_ids (B, S), tgt_ids (B, T) -> (B, T, V_tgt)."""
        src_keep = src_ids != self.config.pad_id  # (B, S)
        memory = self.encode(src_ids)  # (B, S, D)
        return self.decode(tgt_ids, memory, src_keep)

    def encode(self, src_ids: Tensor) -> Tensor:
        """src_ids (B, S) -> memory (B, S, D); padded positions are hidden from attention."""
        keep = src_ids != self.config.pad_id  # (B, S)
        x = self.src_pos(self._embed(self.src_embed, src_ids))  # (B, S, D)
        return self.encoder(self.embed_dropout(x), keep=keep)

    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        src_keep: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """Next-token logits for target prefixes.

        Args:
            tgt_ids: (B, T) target ids; with a cache, only the new tokens, which follow the
                `cache.length` tokens decoded before.
            memory: encoder output (B, S, D).
            src_keep: (B, S) bool, True at real source tokens (None = all real).
            cache: from `new_cache()`, for incremental decoding.

        Returns:
            logits (B, T, V_tgt).
        """
        return self.lm_head(self.decode_hidden(tgt_ids, memory, src_keep, cache))  # (B, T, V)

    def decode_hidden(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        src_keep: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """The decoder's output states (B, T, D), before `lm_head`; arguments as `decode`.

        Training uses it to compute the loss chunk by chunk (`linear_cross_entropy`) instead of
        materialising (B, T, V) logits.
        """
        offset = 0 if cache is None else cache.length
        # With a cache the earlier targets are not at hand; generated tokens are never padding.
        keep = None if cache is not None else tgt_ids != self.config.pad_id  # (B, T)
        if keep is not None:  # the first token starts the target, even where it is the pad id (Marian)
            keep[:, 0] = True
        x = self.tgt_pos(self._embed(self.tgt_embed, tgt_ids), offset)  # (B, T, D)
        return self.decoder(self.embed_dropout(x), memory, keep=keep, memory_keep=src_keep, cache=cache)

    def new_cache(self) -> DecoderCache:
        """Empty decoder caches for `decode(..., cache=...)`."""
        return self.decoder.new_cache()

    def num_parameters(self) -> int:
        """Trainable parameters, each tied tensor counted once."""
        return sum(p.numel() for p in self.parameters())

    def _embed(self, table: nn.Embedding, ids: Tensor) -> Tensor:
        x = table(ids)  # (B, L, D)
        return x * math.sqrt(self.config.d_model) if self.config.scale_embeddings else x
