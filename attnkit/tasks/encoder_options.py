"""Options every task with a text encoder takes: its tokenizer and its size, shared by classify and mlm."""

from __future__ import annotations

from dataclasses import dataclass, field

from attnkit.models import TextEncoderConfig
from attnkit.options import bounds, check_model_options, config_from, model_option


@dataclass(frozen=True, kw_only=True)
class EncoderOptions:
    """Tokenizer and encoder settings of `attnkit train classify` and `attnkit train mlm`."""

    tokenizer: str = field(default="wordpiece", metadata={"help": "wordpiece, bpe or char"})
    vocab_size: int = field(default=8000, metadata={**bounds(ge=16), "help": "tokenizer vocabulary size"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase before tokenizing"})
    max_len: int = field(
        default=256,
        metadata={"help": "tokens per text; classify truncates longer texts, mlm cuts them into pieces"},
    )
    d_model: int = model_option(TextEncoderConfig, "d_model", "model width")
    n_heads: int = model_option(TextEncoderConfig, "n_heads", "attention heads")
    n_layers: int = model_option(TextEncoderConfig, "n_layers", "encoder layers")
    d_ff: int = model_option(TextEncoderConfig, "d_ff", "feed-forward width")
    dropout: float = model_option(TextEncoderConfig, "dropout", "dropout on embeddings and sub-layers")
    attention_dropout: float = model_option(TextEncoderConfig, "attention_dropout", "dropout on attention weights")
    norm_first: bool = model_option(TextEncoderConfig, "norm_first", "pre-norm (else post-norm)")

    def check_encoder(self) -> None:
        """Sizes that cannot work together fail now, as a `UserError`, not after the tokenizer is trained."""
        check_model_options(lambda: self.encoder_config(vocab_size=self.vocab_size))

    def encoder_config(self, vocab_size: int) -> TextEncoderConfig:
        """The encoder these options describe, for a tokenizer of `vocab_size` tokens."""
        return config_from(self, TextEncoderConfig, vocab_size=vocab_size)
