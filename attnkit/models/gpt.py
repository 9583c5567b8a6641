"""A GPT-style decoder-only language model (Radford et al. 2018, "Improving Language Understanding by
Generative Pre-Training"; 2019, "Language Models are Unsupervised Multitask Learners") from `attnkit.nn`.

The `attnkit.nn` pieces, in reading order, as GPT-2 and nanoGPT have them:

    token embedding (torch `nn.Embedding`)
    -> positions (`LearnedPositionalEmbedding`; or none here and `RotaryEmbedding` on queries and
       keys inside attention), `Dropout`
    -> blocks (`self.blocks`: pre-norm layers of causal `MultiHeadAttention` and `FeedForward`; a
       decoder-only stack has no cross-attention, so its layers are `attnkit.nn.Encoder`'s
       `EncoderLayer`s run with causal=True, each with its KV cache)
    -> norm (the stack's final norm)
    -> head (`lm_head`, a linear layer tied to the token embedding).

Generation feeds one token at a time through the per-layer KV caches (`attnkit.decode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from attnkit.nn import Encoder, KVCache, LearnedPositionalEmbedding, RotaryEmbedding, StaticKVCache
from attnkit.nn.config import DictConfig
from attnkit.nn.dropout import Dropout


@dataclass(frozen=True, kw_only=True)
class GPTConfig(DictConfig):
    """Sizes and choices of a GPT.

    Fields:
        vocab_size: tokens V.
        max_len: context length (nanoGPT's block_size).
        d_model, n_heads, n_layers: width, heads, blocks.
        d_ff: feed-forward width (None = 4 d_model).
        dropout: on embeddings, attention weights and sub-layer outputs.
        positional: "learned" (GPT-2) or "rotary" (RoPE on queries and keys).
        activation: "gelu" (exact, as nanoGPT) or "gelu_tanh" (GPT-2's approximation).
        bias: biases in linear layers and norms' shift.
        eps: the layer norms' epsilon.
    """

    vocab_size: int
    max_len: int = 256
    d_model: int = 384
    n_heads: int = 6
    n_layers: int = 6
    d_ff: int | None = None
    dropout: float = 0.0
    positional: Literal["learned", "rotary"] = "learned"
    activation: Literal["gelu", "gelu_tanh"] = "gelu"
    bias: bool = True
    eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_len", "d_model", "n_heads", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        if self.positional not in ("learned", "rotary"):
            raise ValueError(f"positional must be learned or rotary, got {self.positional!r}")
        if self.positional == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ValueError("rotary positions need an even head width d_model / n_heads")
        if self.activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"activation must be gelu or gelu_tanh, got {self.activation!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class GPT(nn.Module):
    """ids (B, T) -> next-token logits (B, T, V), causally: position t sees tokens 0..t only.

    Args:
        config: GPTConfig (V = vocab_size, D = d_model, T at most max_len).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embed = nn.Embedding(config.vocab_size, config.d_model)
        rope = None
        if config.positional == "learned":
            self.pos = LearnedPositionalEmbedding(config.max_len, config.d_model)
        else:
            self.pos = None
            rope = RotaryEmbedding(config.d_model // config.n_heads, config.max_len)
        self.dropout = Dropout(config.dropout)
        # A decoder-only stack: attnkit.nn.Encoder's layers (no cross-attention), always run causally.
        self.blocks = Encoder(
            config.d_model,
            config.n_heads,
            config.d_ff or 4 * config.d_model,
            config.n_layers,
            dropout=config.dropout,
            attention_dropout=config.dropout,
            activation=config.activation,
            norm_first=True,
            bias=config.bias,
            eps=config.eps,
            rope=rope,
            final_norm=True,
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._reset_parameters()
        self.lm_head.weight = self.tok_embed.weight

    def _reset_parameters(self) -> None:
        # GPT-2's scheme: N(0, 0.02) everywhere, the projections into the residual stream scaled
        # down by sqrt(2 · n_layers) so the stream's variance does not grow with depth.
        residual_std = 0.02 / (2 * self.config.n_layers) ** 0.5
        for name, param in self.named_parameters():
            if param.dim() > 1:
                into_residual = name.endswith(("out_proj.weight", "down_proj.weight"))
                nn.init.normal_(param, std=residual_std if into_residual else 0.02)
            elif name.endswith("bias") and "norm" not in name:
                nn.init.zeros_(param)

    def hidden(
        self, ids: Tensor, cache: list[KVCache] | list[StaticKVCache] | None = None, keep: Tensor | None = None
    ) -> Tensor:
        """ids (B, T) -> final states (B, T, D); with a cache, ids follow the cached positions.

        keep: (B, S) bool, True at real tokens, for batches padded on the left (as batched generation
            pads prompts): S = cached + new positions. Padding is hidden from attention and each row's
            positions count its real tokens only, so a row's states do not depend on its padding.
            Learned positions only.

        With `StaticKVCache`s the position is a tensor and is not checked here (a check would read it
        back from the device at every step): their capacity is at most `max_len`, and the caller
        keeps within it, as `attnkit.decode.CausalLMStepper` does.
        """
        offset = cache[0].offset if cache else 0
        if isinstance(offset, int) and offset + ids.size(1) > self.config.max_len:
            raise ValueError(
                f"{offset + ids.size(1)} positions exceed the context of {self.config.max_len}; "
                "generation slides the window (attnkit.decode.CausalLMStepper(max_len=...))"
            )
        x = self.tok_embed(ids)  # (B, T, D)
        if keep is not None:
            if self.pos is None:
                raise ValueError("keep (left padding) needs learned positions, not rotary ones")
            positions = (keep.long().cumsum(dim=-1) - 1).clamp(min=0)[:, -ids.size(1) :]  # (B, T)
            x = x + self.pos.weight[positions]
        elif self.pos is not None:
            x = self.pos(x, offset)
        return self.blocks(self.dropout(x), causal=True, cache=cache, keep=keep)  # (B, T, D)

    def forward(
        self, ids: Tensor, cache: list[KVCache] | list[StaticKVCache] | None = None, keep: Tensor | None = None
    ) -> Tensor:
        """ids (B, T) -> logits (B, T, V); cache and keep as `hidden`."""
        return self.lm_head(self.hidden(ids, cache, keep))

    def new_cache(self, capacity: int | None = None) -> list[KVCache] | list[StaticKVCache]:
        """One empty KV cache per block, for incremental decoding; with `capacity` (at most
        `max_len`), fixed-size `StaticKVCache`s for a compiled decoding step."""
        if capacity is not None and not 1 <= capacity <= self.config.max_len:
            raise ValueError(f"capacity must be in [1, max_len={self.config.max_len}], got {capacity}")
        return self.blocks.new_cache(capacity)

    def num_parameters(self) -> int:
        """Trainable parameters, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())
