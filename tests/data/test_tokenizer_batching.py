"""Tokenizers trained on the training split, encoding with [CLS] and truncation, length buckets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnkit.data.batching import length_bucketed_plan, pad
from attnkit.data.tokenizer import CLS_ID, PAD_ID, UNK_ID, encode_texts, load_tokenizer, train_tokenizer
from attnkit.errors import DataError
from tests.fixtures import make_texts

TEXTS = [t for t, _ in make_texts(60, seed=0)]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "char"])
def test_train_save_load_round_trip(kind, tmp_path):
    tokenizer = train_tokenizer(TEXTS, kind=kind, vocab_size=120)
    assert tokenizer.token_to_id("[PAD]") == PAD_ID and tokenizer.token_to_id("[CLS]") == CLS_ID
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    sample = "the striker scored a goal"
    assert loaded.encode(sample).ids == tokenizer.encode(sample).ids


def test_lowercase_option():
    lower = train_tokenizer(TEXTS, vocab_size=120, lowercase=True)
    cased = train_tokenizer(TEXTS, vocab_size=120, lowercase=False)
    assert lower.encode("GOAL").ids == lower.encode("goal").ids
    assert cased.encode("GOAL").ids != cased.encode("goal").ids


def test_chinese_characters_are_tokens():
    tokenizer = train_tokenizer(["股市上涨", "房价下跌", "股市下跌"], kind="char", vocab_size=50)
    assert tokenizer.encode("股市").tokens == ["股", "市"]
    # WordPiece splits CJK characters apart too (BERT's normaliser).
    wordpiece = train_tokenizer(["股市上涨", "房价下跌"], kind="wordpiece", vocab_size=50)
    assert wordpiece.encode("股市").tokens == ["股", "市"]


def test_unseen_characters_become_unk():
    tokenizer = train_tokenizer(TEXTS, kind="char", vocab_size=120)
    assert UNK_ID in tokenizer.encode("★").ids


def test_encode_adds_cls_and_truncates():
    tokenizer = train_tokenizer(TEXTS, vocab_size=120)
    encoded = encode_texts(tokenizer, ["goal", " ".join(["goal"] * 50)], max_len=10)
    assert encoded.ids[0][0] == CLS_ID and len(encoded.ids[1]) == 10
    assert encoded.truncated == 1


def test_bad_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(DataError, match="not a valid tokenizer"):
        load_tokenizer(tmp_path / "tokenizer.json")


def test_bucketed_plan_is_deterministic_and_complete():
    lengths = [5, 50, 7, 48, 6, 52, 8, 49, 30, 31] * 10
    plan = length_bucketed_plan(lengths, 4, shuffle=True, seed=3, pool=5)
    first, again, other = plan(0), plan(0), plan(1)
    assert first == again and first != other
    assert sorted(i for batch in first for i in batch) == list(range(len(lengths)))
    # Within a pool, batches hold similar lengths: much less padding than a random batching.
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in first)
    assert waste < 0.25 * sum(lengths)
    ordered = length_bucketed_plan(lengths, 4, shuffle=False)(0)
    flat = [lengths[i] for batch in ordered for i in batch]
    assert flat == sorted(flat)


def test_pad():
    assert pad([[1, 2, 3], [4]]).tolist() == [[1, 2, 3], [4, 0, 0]]
    assert pad([[]], pad_id=9).shape == torch.Size([1, 1])
    assert pad([]).shape == torch.Size([0, 1])
    for rows in ([np.array([5, 6]), np.array([7])], [torch.tensor([5, 6]), torch.tensor([7])]):
        assert pad(rows, pad_id=9).tolist() == [[5, 6], [7, 9]]
