"""The translation model: the encoder-decoder Transformer of Vaswani et al. 2017 ("Attention Is All You
Need") with its decoding conventions; its configuration is `attnkit.nn.TransformerConfig`.

All of it is `attnkit.nn.Transformer`; the pieces, in reading order:

    token embeddings (`src_embed`, `tgt_embed`: torch `nn.Embedding`; times sqrt(d_model) with
       `scale_embeddings`)
    -> positions (`SinusoidalPositionalEncoding`, or `LearnedPositionalEmbedding`), `Dropout`
    -> blocks (`encoder`: `attnkit.nn.Encoder` over the source; `decoder`: `attnkit.nn.Decoder`,
       causal self-attention and cross-attention to the encoder's states)
    -> norm (each stack's final norm when pre-norm; post-norm layers end normalised)
    -> head (`lm_head`, a linear layer tied to the target embedding with `tie_embeddings`).
"""

from __future__ import annotations

from torch import Tensor

from attnkit.nn import Transformer, TransformerConfig


class Translator(Transformer):
    """`attnkit.nn.Transformer` for translation: source ids (B, S), target ids (B, T) -> logits (B, T, V).

    Sentences are encoded as `tokens + [EOS]` on the source side and `[BOS] + tokens + [EOS]` on the
    target side; the decoder reads the target without its last token and predicts it without its
    first. Post-norm (the paper) unless `config.norm_first`; with a shared vocabulary and
    `tie_embeddings` the source embedding, target embedding and output projection are one matrix.

    Args:
        config: TransformerConfig (tgt_vocab_size None = shared vocabulary).
        bos_id, eos_id: the ids that start and end a target sentence.
    """

    def __init__(self, config: TransformerConfig, *, bos_id: int, eos_id: int) -> None:
        super().__init__(config)
        self.bos_id, self.eos_id = bos_id, eos_id

    def hidden(self, src_ids: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced decoder states: src_ids (B, S), tgt_in (B, T) -> (B, T, D), before `lm_head`."""
        src_keep = src_ids != self.config.pad_id  # (B, S)
        return self.decode_hidden(tgt_in, self.encode(src_ids), src_keep)
