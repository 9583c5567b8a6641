"""The Transformer's encoder and decoder layers (Vaswani et al. 2017, §3.1).

Each sub-layer (attention, feed-forward) is wrapped in a residual connection and a norm. Post-norm,
the paper's arrangement, normalises after the residual sum: x = Norm(x + Sublayer(x)). Pre-norm
(Xiong et al. 2020) normalises the sub-layer's input: x = x + Sublayer(Norm(x)); it trains
without warm-up at depth and needs a final norm after the last layer.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnkit.nn.dropout import Dropout
from attnkit.nn.feedforward import Activation, FeedForward
from attnkit.nn.multihead import KVCache, MultiHeadAttention
from attnkit.nn.norms import NormKind, make_norm
from attnkit.nn.positional import RotaryEmbedding


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward; with `causal=True` and a cache it is also a GPT block.

    Args:
        d_model: width D.
        n_heads: attention heads H.
        d_ff: feed-forward inner width.
        dropout: dropout on each sub-layer's output before the residual sum, and inside the FFN.
        attention_dropout: dropout on the attention weights (the paper uses none).
        activation: feed-forward activation, "relu" (paper), "gelu", "gelu_tanh" or "swiglu".
        norm: "layer" (paper), "rms" or "batch" (padding-aware BatchNorm).
        norm_first: pre-norm when True, post-norm (paper) when False.
        bias: biases in the attention and feed-forward projections.
        eps: the norms' epsilon.
        rope: rotary embedding for the self-attention's queries and keys.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation: Activation = "relu",
        norm: NormKind = "layer",
        norm_first: bool = False,
        bias: bool = True,
        eps: float = 1e-5,
        rope: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=attention_dropout, bias=bias, rope=rope)
        self.ffn = FeedForward(d_model, d_ff, activation=activation, dropout=dropout, bias=bias)
        self.attn_norm = make_norm(norm, d_model, eps)
        self.ffn_norm = make_norm(norm, d_model, eps)
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        *,
        keep: Tensor | None = None,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Transform x (B, T, D) -> (B, T, D).

        Args:
            keep: (B, S) bool, True at real tokens; padded keys are hidden from attention (S = T,
                or cached + new positions when decoding with a cache).
            mask: an extra attention mask, bool broadcastable to (B, H, T, S), True = may attend.
            causal: hide later positions.
            cache: self-attention key/value cache for incremental decoding.
        """
        attn_mask = _attention_mask(keep, mask)
        token_keep = None if keep is None else keep[:, -x.size(1) :]  # (B, T): the positions in x
        attend, feed_forward, dropout = self.self_attn, self.ffn, self.dropout
        if self.norm_first:
            x = x + dropout(attend(self.attn_norm(x, token_keep), mask=attn_mask, causal=causal, cache=cache))
            return x + dropout(feed_forward(self.ffn_norm(x, token_keep)))
        x = self.attn_norm(x + dropout(attend(x, mask=attn_mask, causal=causal, cache=cache)), token_keep)
        return self.ffn_norm(x + dropout(feed_forward(x)), token_keep)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder output, feed-forward.

    Arguments as `EncoderLayer`, plus `memory_dim`: width of the encoder output (default d_model).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation: Activation = "relu",
        norm: NormKind = "layer",
        norm_first: bool = False,
        bias: bool = True,
        eps: float = 1e-5,
        memory_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=attention_dropout, bias=bias)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=attention_dropout, bias=bias, kv_dim=memory_dim)
        self.ffn = FeedForward(d_model, d_ff, activation=activation, dropout=dropout, bias=bias)
        self.attn_norm = make_norm(norm, d_model, eps)
        self.cross_attn_norm = make_norm(norm, d_model, eps)
        self.ffn_norm = make_norm(norm, d_model, eps)
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        keep: Tensor | None = None,
        memory_keep: Tensor | None = None,
        causal: bool = True,
        self_cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
    ) -> Tensor:
        """Transform target states x (B, T, D) given the encoder output memory (B, S, D_mem).

        Args:
            keep: (B, T') bool, True at real target tokens (T' = T, or cached + new positions).
            memory_keep: (B, S) bool, True at real source tokens.
            causal: hide later target positions (True for a decoder).
            self_cache, cross_cache: key/value caches for incremental decoding.
        """
        self_mask = _attention_mask(keep, None)
        cross_mask = _attention_mask(memory_keep, None)
        token_keep = None if keep is None else keep[:, -x.size(1) :]

        def attend(h: Tensor) -> Tensor:
            return self.dropout(self.self_attn(h, mask=self_mask, causal=causal, cache=self_cache))

        def attend_memory(h: Tensor) -> Tensor:
            return self.dropout(self.cross_attn(h, memory, mask=cross_mask, cache=cross_cache))

        def feed_forward(h: Tensor) -> Tensor:
            return self.dropout(self.ffn(h))

        if self.norm_first:
            x = x + attend(self.attn_norm(x, token_keep))
            x = x + attend_memory(self.cross_attn_norm(x, token_keep))
            return x + feed_forward(self.ffn_norm(x, token_keep))
        x = self.attn_norm(x + attend(x), token_keep)
        x = self.cross_attn_norm(x + attend_memory(x), token_keep)
        return self.ffn_norm(x + feed_forward(x), token_keep)


def _attention_mask(keep: Tensor | None, mask: Tensor | None) -> Tensor | None:
    """Turn key padding (B, S) into a (B, 1, 1, S) mask and combine it with an explicit mask."""
    if keep is None:
        return mask
    key_mask = keep[:, None, None, :]  # (B, 1, 1, S)
    return key_mask if mask is None else key_mask & mask
