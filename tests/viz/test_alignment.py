"""Cross-attention alignment on a tiny translator trained to reverse its input: some layer and head
must look at the mirrored source position, which proves the alignment view is wired the right way
round (rows are target positions, columns source positions)."""

from __future__ import annotations

import torch

from attnkit.decode import Seq2SeqStepper, greedy_decode
from attnkit.models import TransformerConfig, Translator
from attnkit.viz import alignment, capture_attention

PAD, BOS, EOS, FIRST, VOCAB, LENGTH = 0, 1, 2, 3, 10, 5


def _batch(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.randint(FIRST, VOCAB, (size, LENGTH), generator=generator)
    tgt = torch.cat([src.flip(1), torch.full((size, 1), EOS)], dim=1)  # the reversed source, then eos
    return src, tgt


def test_alignment_of_a_reversing_translator_is_the_mirror():
    torch.manual_seed(0)
    config = TransformerConfig(
        src_vocab_size=VOCAB,
        d_model=32,
        n_heads=2,
        n_encoder_layers=1,
        n_decoder_layers=1,
        d_ff=64,
        dropout=0.0,
        max_len=16,
        norm_first=True,
    )
    model = Translator(config, bos_id=BOS, eos_id=EOS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    for _ in range(150):
        src, tgt = _batch(64, generator)
        tgt_in = torch.cat([torch.full((64, 1), BOS), tgt[:, :-1]], dim=1)
        loss = torch.nn.functional.cross_entropy(model(src, tgt_in).transpose(1, 2), tgt)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    src, tgt = _batch(32, torch.Generator().manual_seed(2))
    out = greedy_decode(Seq2SeqStepper(model, src), torch.full((32,), BOS), eos_id=EOS, max_new_tokens=LENGTH + 1)
    accuracy = float((out == tgt).all(dim=1).float().mean())
    assert accuracy > 0.9, accuracy  # it has learnt to reverse
    tgt_in = torch.cat([torch.full((32, 1), BOS), tgt[:, :-1]], dim=1)
    with torch.no_grad(), capture_attention(model) as captured:
        model(src, tgt_in)
    mirror = torch.arange(LENGTH - 1, -1, -1)  # target position t produces source token LENGTH - 1 - t
    best = 0.0
    for record in captured.of_kind("cross"):
        for head in range(2):
            _, argmax = alignment(record.weights[:, head : head + 1])  # (B, T)
            best = max(best, float((argmax[:, :LENGTH] == mirror).float().mean()))
    assert best > 0.8, best
