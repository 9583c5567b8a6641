"""Stacks of encoder and decoder layers, and the decoder's per-layer caches."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from attnkit.nn.feedforward import Activation
from attnkit.nn.layers import DecoderLayer, EncoderLayer
from attnkit.nn.multihead import KVCache, StaticKVCache
from attnkit.nn.norms import NormKind, make_norm
from attnkit.nn.positional import RotaryEmbedding


class Encoder(nn.Module):
    """N encoder layers over embedded inputs, with a final norm for pre-norm stacks.

    Args:
        d_model, n_heads, d_ff, dropout, attention_dropout, activation, norm, norm_first, bias, eps,
            rope: as `EncoderLayer`.
        n_layers: number of layers N.
        final_norm: normalise the last layer's output (default: when pre-norm, which leaves the
            residual stream unnormalised; post-norm layers already end with a norm).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        n_layers: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation: Activation = "relu",
        norm: NormKind = "layer",
        norm_first: bool = False,
        bias: bool = True,
        eps: float = 1e-5,
        rope: RotaryEmbedding | None = None,
        final_norm: bool | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(
                d_model,
                n_heads,
                d_ff,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation=activation,
                norm=norm,
                norm_first=norm_first,
                bias=bias,
                eps=eps,
                rope=rope,
            )
            for _ in range(n_layers)
        )
        use_final_norm = norm_first if final_norm is None else final_norm
        self.final_norm = make_norm(norm, d_model, eps) if use_final_norm else None

    def forward(
        self,
        x: Tensor,
        *,
        keep: Tensor | None = None,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: list[KVCache] | None = None,
    ) -> Tensor:
        """x (B, T, D) -> (B, T, D); keep, mask, causal as `EncoderLayer`; cache: one KVCache (or
        StaticKVCache) per layer."""
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(f"cache has {len(cache)} entries for {len(self.layers)} layers")
        for i, layer in enumerate(self.layers):
            x = layer(x, keep=keep, mask=mask, causal=causal, cache=None if cache is None else cache[i])
        if self.final_norm is not None:
            x = self.final_norm(x, None if keep is None else keep[:, -x.size(1) :])
        return x

    def new_cache(self, capacity: int | None = None) -> list[KVCache] | list[StaticKVCache]:
        """Empty caches, one per layer, for causal decoding (GPT-style): growing `KVCache`s, or
        `StaticKVCache`s of `capacity` positions for a compiled decoding step."""
        if capacity is not None:
            return [StaticKVCache(capacity) for _ in self.layers]
        return [KVCache() for _ in self.layers]


@dataclass
class DecoderCache:
    """Each decoder layer's self-attention and cross-attention caches."""

    self_attn: list[KVCache]
    cross_attn: list[KVCache]
    # Counted here, not read off a layer's cache, so that it holds for a decoder with no layers too.
    decoded: int = 0

    @property
    def length(self) -> int:
        """Target positions decoded so far."""
        return self.decoded

    def reorder(self, index: Tensor, *, cross: bool = True) -> None:
        """Keep batch rows `index` (N,) in that order (beam search). `cross=False` leaves the
        cross-attention caches as they are: right when every row still decodes the same source as
        the row that held its place (they depend on the source only)."""
        for cache in (*self.self_attn, *(self.cross_attn if cross else ())):
            cache.reorder(index)


class Decoder(nn.Module):
    """N decoder layers over embedded targets, attending to an encoder's output.

    Arguments as `Encoder` (no `rope`), plus `memory_dim`: width of the encoder output.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        n_layers: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation: Activation = "relu",
        norm: NormKind = "layer",
        norm_first: bool = False,
        bias: bool = True,
        eps: float = 1e-5,
        memory_dim: int | None = None,
        final_norm: bool | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(
                d_model,
                n_heads,
                d_ff,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation=activation,
                norm=norm,
                norm_first=norm_first,
                bias=bias,
                eps=eps,
                memory_dim=memory_dim,
            )
            for _ in range(n_layers)
        )
        use_final_norm = norm_first if final_norm is None else final_norm
        self.final_norm = make_norm(norm, d_model, eps) if use_final_norm else None

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        keep: Tensor | None = None,
        memory_keep: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """x (B, T, D), memory (B, S, D_mem) -> (B, T, D); arguments as `DecoderLayer`."""
        for i, layer in enumerate(self.layers):
            x = layer(
                x,
                memory,
                keep=keep,
                memory_keep=memory_keep,
                self_cache=None if cache is None else cache.self_attn[i],
                cross_cache=None if cache is None else cache.cross_attn[i],
            )
        if self.final_norm is not None:
            x = self.final_norm(x, None if keep is None else keep[:, -x.size(1) :])
        if cache is not None:
            cache.decoded += x.size(1)
        return x

    def new_cache(self) -> DecoderCache:
        """Empty self- and cross-attention caches for every layer."""
        return DecoderCache([KVCache() for _ in self.layers], [KVCache() for _ in self.layers])
