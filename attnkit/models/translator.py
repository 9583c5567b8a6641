"""The translation model: the paper's encoder-decoder Transformer with its decoding conventions."""

from __future__ import annotations

from torch import Tensor

from attnkit.nn import Transformer, TransformerConfig


class Translator(Transformer):
    """`attnkit.nn.Transformer` for translation: source ids -> target ids, one shared vocabulary.

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
