"""BERT's masked language model (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding", §3.1 task #1) on a `TextEncoder`.

Some tokens of a text are hidden and the model predicts them from both sides. The `attnkit.nn`
pieces, in reading order (all but the head are the `TextEncoder` body):

    token embedding (torch `nn.Embedding`)
    -> positions (`LearnedPositionalEmbedding` or `SinusoidalPositionalEncoding`), `Dropout`
    -> blocks (`Encoder`: `EncoderLayer`s of `MultiHeadAttention` and `FeedForward`, bidirectional,
       padding hidden)
    -> norm (the `Encoder`'s final norm when pre-norm)
    -> head: BERT's transform (Linear, GELU, LayerNorm) and an output layer tied to the token
       embedding.

Pre-training this way on a corpus's own text gives `TextClassifier` an encoder to start from (the
same `body.*` weights).
"""

from __future__ import annotations

from torch import Tensor, nn

from attnkit.models.text_encoder import TextEncoder, TextEncoderConfig


class MaskedLanguageModel(nn.Module):
    """BERT's masked-language-model pre-training head on a `TextEncoder`; ids (B, L) -> logits (B, L, V).

    The output projection is tied to the token embedding.

    Args:
        config: the encoder's configuration (V = config.vocab_size, D = config.d_model).
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.body = TextEncoder(config)
        self.transform = nn.Sequential(
            nn.Linear(config.d_model, config.d_model), nn.GELU(), nn.LayerNorm(config.d_model, eps=config.eps)
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        self.lm_head.weight = self.body.embed.weight

    def forward(self, ids: Tensor, chosen: Tensor | None = None, segments: Tensor | None = None) -> Tensor:
        """ids (B, L) -> logits (B, L, V); with `chosen` (B, L) bool, only there: (N, V); segments
        (B, L) as `TextEncoder`.

        Scoring only the masked positions (15% of tokens) saves most of the output layer's work.
        """
        hidden, _ = self.body(ids, segments)  # (B, L, D)
        if chosen is not None:
            hidden = hidden[chosen]  # (N, D)
        return self.lm_head(self.transform(hidden))
