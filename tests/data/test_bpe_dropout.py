"""BPE-dropout: with p = 0 it is the tokenizer's own segmentation; with p > 0 it gives other
segmentations of the same text from the vocabulary, repeatable from a seed."""

from __future__ import annotations

import random

import pytest

from attnkit.data.bpe_dropout import BPEDropout
from attnkit.data.tokenizer import decode_text, train_tokenizer
from attnkit.errors import DataError

CORPUS = [
    "Ein Mann fährt Fahrrad durch die Straße.",
    "Zwei Hunde spielen im Schnee, ein dritter schaut zu!",
    "A man rides a bicycle down the street.",
    "Two dogs play in the snow while a third one watches.",
] * 10
TEXTS = [
    *CORPUS[:4],
    "Ünbekannte Zeichen: 日本語 ☃ 🙂",
    "  two  spaces\tand a tab\nand a new line",
    "UPPER lower 12345 e\u0301",  # a combining accent, which NFC composes
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, kind="bytebpe", vocab_size=400)


def test_without_dropout_it_is_the_tokenizers_segmentation(tokenizer):
    plain = BPEDropout(tokenizer, 0.0)
    rng = random.Random(0)
    for text in TEXTS:
        assert plain.encode(text, rng) == tokenizer.encode(text, add_special_tokens=False).ids, text


def test_dropout_segments_differently_into_the_same_text(tokenizer):
    dropout = BPEDropout(tokenizer, 0.3)
    rng = random.Random(0)
    for text in TEXTS:
        plain = tokenizer.encode(text, add_special_tokens=False).ids
        samples = [dropout.encode(text, rng) for _ in range(20)]
        for ids in samples:
            assert decode_text(tokenizer, ids) == tokenizer.normalizer.normalize_str(text)
            assert len(ids) >= len(plain)  # skipped merges only ever leave more, shorter pieces
        if len(plain) < len(text.encode()):  # some merge applies, so dropout can skip it
            assert len({tuple(ids) for ids in samples}) > 1, text


def test_dropout_repeats_from_a_seed_and_all_dropped_gives_bytes(tokenizer):
    dropout = BPEDropout(tokenizer, 0.5)
    first = [dropout.encode(t, random.Random(7)) for t in TEXTS]
    assert [dropout.encode(t, random.Random(7)) for t in TEXTS] == first
    assert [dropout.encode(t, random.Random(8)) for t in TEXTS] != first
    every = BPEDropout(tokenizer, 1.0)
    for text in TEXTS:
        normal = tokenizer.normalizer.normalize_str(text)
        assert len(every.encode(text, random.Random(0))) == len(normal.encode("utf-8"))  # one token a byte


def test_bad_dropout_and_tokenizers(tokenizer):
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        BPEDropout(tokenizer, 1.5)
    with pytest.raises(DataError, match="byte-level BPE"):
        BPEDropout(train_tokenizer(CORPUS, kind="wordpiece", vocab_size=200), 0.1)
    with pytest.raises(DataError, match="byte-level BPE"):  # a BPE with an unknown token has unsplittable words
        BPEDropout(train_tokenizer(CORPUS, kind="bpe", vocab_size=200), 0.1)
