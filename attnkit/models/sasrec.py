"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018, "Self-Attentive
Sequential Recommendation").

A user's item history is a sequence; causal self-attention blocks turn it into one state per
position, and the state at position t scores every item as the next one by a dot product with the
item embedding table (shared between input and output, §3.5 of the paper): a decoder-only model
over items. The `attnkit.nn` pieces, in reading order:

    item embedding (torch `nn.Embedding`, id 0 = padding, scaled by sqrt(d))
    -> positions (`LearnedPositionalEmbedding`, counted back from the most recent item), `Dropout`
    -> blocks (`self.blocks`: style "attnkit", `attnkit.nn.Encoder`'s `EncoderLayer`s run with
       causal=True, as a decoder-only stack has no cross-attention; style "reference",
       `ReferenceStack` of `ReferenceBlock`s built from `LayerNorm`, `MultiHeadAttention`,
       `FeedForward`)
    -> norm (the stack's final norm)
    -> head (`score_all` / `score`: dot products with the item embedding table; no weights of its own).

Runs saved before the stack was named `blocks` hold its weights as `encoder.*`; `SASRec` loads them
under the new names (`_load_from_state_dict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor, nn

from attnkit.nn import Encoder, FeedForward, LayerNorm, LearnedPositionalEmbedding, MultiHeadAttention
from attnkit.nn.config import DictConfig
from attnkit.nn.dropout import Dropout

Style = Literal["attnkit", "reference"]


@dataclass(frozen=True, kw_only=True)
class SASRecConfig(DictConfig):
    """Sizes of a SASRec model; the defaults are the paper's ML-1M settings.

    Fields:
        n_items: items 1..n_items (id 0 is padding).
        max_len: longest history n the model sees (the most recent items are kept).
        d_model, n_heads, n_layers: width d, heads and self-attention blocks b.
        d_ff: inner width of the point-wise feed-forward network (the paper: d).
        dropout: on embeddings, attention outputs and feed-forward outputs.
        attention_dropout: on the attention weights (the reference code uses the same rate as
            `dropout`; 0 leaves them whole).
        norm_first: pre-norm blocks, as the paper's Eq. (4)-(5) (LayerNorm before each sub-layer).
        style: "reference" (the default): the blocks and initialisation of the authors' code
            (`ReferenceBlock`; item and position tables Xavier-normal), which learn markedly faster
            on the paper's data; "attnkit": `attnkit.nn.Encoder` blocks run causally, item table
            N(0, 1/d). Configurations saved before this field existed were "attnkit".
    """

    SAVED_WITHOUT: ClassVar[dict[str, object]] = {"style": "attnkit"}

    n_items: int
    max_len: int = 200
    d_model: int = 50
    n_heads: int = 1
    n_layers: int = 2
    d_ff: int = 50
    dropout: float = 0.2
    attention_dropout: float = 0.0
    norm_first: bool = True
    style: Style = "reference"

    def __post_init__(self) -> None:
        for name in ("n_items", "max_len", "d_model", "n_heads", "n_layers", "d_ff"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        for name in ("dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.style not in get_args(Style):
            raise ValueError(f"style must be {' or '.join(get_args(Style))}, got {self.style!r}")
        if self.style == "reference" and not self.norm_first:
            raise ValueError("norm_first=False applies to the attnkit style only")


class SASRec(nn.Module):
    """Item histories (B, L), left-padded with 0 -> states (B, L, D); scores against item embeddings.

    Positions count back from the most recent item (the last column is position max_len - 1), so a
    history padded to any length gives the same states at its real positions, and padded keys are
    hidden from attention: padding changes nothing (the reference ports miss this mask).

    Args:
        config: SASRecConfig (D = d_model, L at most max_len).
    """

    # The blocks' attribute in earlier releases, whose saved weights still load (prefix "encoder.").
    _OLD_BLOCKS_PREFIX = "encoder."

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embed = nn.Embedding(config.n_items + 1, config.d_model, padding_idx=0)
        self.pos = LearnedPositionalEmbedding(config.max_len, config.d_model)
        self.dropout = Dropout(config.dropout)
        if config.style == "reference":
            self.blocks: ReferenceStack | Encoder = ReferenceStack(config)
            # The reference code draws every weight Xavier-normal: for the tables that makes item
            # vectors small (std sqrt(2 / (items + d))) next to the position vectors.
            nn.init.xavier_normal_(self.item_embed.weight)
            nn.init.xavier_normal_(self.pos.weight)
        else:
            # A decoder-only stack: attnkit.nn.Encoder's layers, always run with causal=True.
            self.blocks = Encoder(
                config.d_model,
                config.n_heads,
                config.d_ff,
                config.n_layers,
                dropout=config.dropout,
                attention_dropout=config.attention_dropout,
                activation="relu",
                norm_first=config.norm_first,
                final_norm=True,
            )
            nn.init.normal_(self.item_embed.weight, std=config.d_model**-0.5)
        with torch.no_grad():
            self.item_embed.weight[0].zero_()

    def forward(self, history: Tensor) -> Tensor:
        """history (B, L) item ids, most recent last, 0 = padding on the left -> states (B, L, D)."""
        length = history.size(1)
        if length > self.config.max_len:
            raise ValueError(f"history of length {length} exceeds max_len={self.config.max_len}")
        keep = history != 0  # (B, L)
        x = self.item_embed(history) * math.sqrt(self.config.d_model)  # (B, L, D)
        x = self.dropout(self.pos(x, offset=self.config.max_len - length))
        x = x * keep.unsqueeze(-1)
        return self.blocks(x, keep=keep, causal=True)  # (B, L, D)

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Rename weights saved by earlier releases, whose `encoder.*` are now `blocks.*`, then load.

        `load_state_dict` (and so `attnkit.engine.load_weights`) calls this on the model before its
        submodules, which then find their weights under the new names.
        """
        old, new = prefix + self._OLD_BLOCKS_PREFIX, prefix + "blocks."
        for key in [key for key in state_dict if key.startswith(old)]:
            renamed = new + key.removeprefix(old)
            if renamed not in state_dict:  # both present: the old one is left over and reported unexpected
                state_dict[renamed] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def score_all(self, states: Tensor) -> Tensor:
        """states (..., D) -> scores of every item (..., n_items + 1); column 0 is padding."""
        return states @ self.item_embed.weight.T

    def score(self, states: Tensor, items: Tensor) -> Tensor:
        """states (B, D) or (B, L, D), items (B, K) or (B, L, K) -> scores (B, K) or (B, L, K)."""
        return (states.unsqueeze(-2) * self.item_embed(items)).sum(-1)


class ReferenceBlock(nn.Module):
    """A self-attention block as the SASRec authors' code computes it, from `attnkit.nn` parts.

        q = LN(x);  x = q + Attention(queries q, keys and values x);  x = LN'(x);  x = x + FFN(x)

    Unlike pre-norm (x + Sublayer(LN(x))), the residual sum starts from the normalised stream, and
    keys and values come from the stream before the norm. Padded positions are zeroed on the way out.

    Args:
        config: SASRecConfig (d_model, n_heads, d_ff, dropout, attention_dropout).
    """

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.attn_norm = LayerNorm(config.d_model, eps=1e-8)
        self.self_attn = MultiHeadAttention(config.d_model, config.n_heads, dropout=config.attention_dropout)
        self.ffn_norm = LayerNorm(config.d_model, eps=1e-8)
        self.ffn = FeedForward(config.d_model, config.d_ff, activation="relu", dropout=config.dropout)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor, keep: Tensor, causal: bool = True) -> Tensor:
        """x (B, L, D), keep (B, L) bool, True at real items -> (B, L, D)."""
        queries = self.attn_norm(x)
        x = queries + self.self_attn(queries, x, mask=keep[:, None, None, :], causal=causal)
        x = self.ffn_norm(x)
        x = x + self.dropout(self.ffn(x))
        return x * keep.unsqueeze(-1)


class ReferenceStack(nn.Module):
    """`ReferenceBlock`s then a final LayerNorm: SASRec's causal stack in the authors' code.

    Args:
        config: SASRecConfig (n_layers blocks of width d_model).
    """

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ReferenceBlock(config) for _ in range(config.n_layers))
        self.final_norm = LayerNorm(config.d_model, eps=1e-8)

    def forward(self, x: Tensor, *, keep: Tensor, causal: bool = True) -> Tensor:
        """x (B, L, D), keep (B, L) -> (B, L, D)."""
        for layer in self.layers:
            x = layer(x, keep, causal)
        return self.final_norm(x)
