"""Options every task with a text encoder takes: its tokenizer and its size, shared by classify and mlm."""

from __future__ import annotations

from dataclasses import dataclass, field

from attnkit.models import TextEncoderConfig


@dataclass(frozen=True, kw_only=True)
class EncoderOptions:
    """Tokenizer and encoder settings of `attnkit train classify` and `attnkit train mlm`."""

    tokenizer: str = field(default="wordpiece", metadata={"help": "wordpiece, bpe or char"})
    vocab_size: int = field(default=8000, metadata={"help": "tokenizer vocabulary size"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase before tokenizing"})
    max_len: int = field(
        default=256,
        metadata={"help": "tokens per text; classify truncates longer texts, mlm cuts them into pieces"},
    )
    d_model: int = field(default=256, metadata={"help": "model width"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    n_layers: int = field(default=4, metadata={"help": "encoder layers"})
    d_ff: int = field(default=1024, metadata={"help": "feed-forward width"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings and sub-layers"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights"})
    norm_first: bool = field(default=True, metadata={"help": "pre-norm (else post-norm)"})

    def encoder_config(self, vocab_size: int) -> TextEncoderConfig:
        """The encoder these options describe, for a tokenizer of `vocab_size` tokens."""
        return TextEncoderConfig(
            vocab_size=vocab_size,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            max_len=self.max_len,
            norm_first=self.norm_first,
        )
