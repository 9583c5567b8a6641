"""BPE-dropout (Provilkov et al. 2020): a different subword segmentation of each training sentence
at every pass, which regularises translation models trained on little data.

BPE splits a word into bytes and applies its learned merges, lowest rank first. BPE-dropout skips
each applicable merge with probability p at every step, so "Fahrrad" is one token most of the
time, and sometimes "Fahr" + "rad" or "F" + "ahr" + "rad". Every segmentation decodes to the same
text and uses only tokens of the vocabulary. Validation and test keep the plain segmentation.

`tokenizers` has a BPE `dropout` of its own, but it draws from an unseeded generator, so two runs
with one seed would see different data and a resumed run would not repeat the one it continues.
`BPEDropout` applies the tokenizer's own merges in Python with a `random.Random` the caller seeds;
with p = 0 it gives exactly the tokenizer's ids (a test checks this).
"""

from __future__ import annotations

import json
import random

from tokenizers import Tokenizer

from attnkit.errors import DataError


class BPEDropout:
    """Segments text with a trained byte-level BPE `tokenizer` ("bytebpe"), skipping merges at random.

    Args:
        tokenizer: a BPE tokenizer from `train_tokenizer(kind="bytebpe")` (or any BPE without
            unknown tokens, subword prefixes or suffixes).
        p: probability of skipping each applicable merge at each step, in [0, 1]; the paper uses 0.1.
    """

    def __init__(self, tokenizer: Tokenizer, p: float) -> None:
        if not 0 <= p <= 1:
            raise DataError(f"BPE-dropout must be in [0, 1], got {p}")
        model = json.loads(tokenizer.to_str())["model"]
        plain = not any(model.get(k) for k in ("unk_token", "continuing_subword_prefix", "end_of_word_suffix"))
        if model.get("type") != "BPE" or not plain:
            raise DataError("BPE-dropout needs a plain byte-level BPE tokenizer (one trained as bytebpe)")
        self.tokenizer, self.p = tokenizer, p
        self.vocab: dict[str, int] = model["vocab"]
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.ranks: dict[tuple[str, str], int] = {pair: rank for rank, pair in enumerate(merges)}

    def words(self, text: str) -> list[str]:
        """The pre-tokenized words of `text` (normalised, byte-level), which merges never cross."""
        normalizer, pre_tokenizer = self.tokenizer.normalizer, self.tokenizer.pre_tokenizer
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        return [word for word, _ in pre_tokenizer.pre_tokenize_str(text)] if pre_tokenizer else [text]

    def segment(self, word: str, rng: random.Random) -> list[str]:
        """The pieces of one pre-tokenized `word`: at each step the lowest-ranked adjacent pair that
        survives the dropout (leftmost on ties) is merged, until none is left."""
        pieces = list(word)
        ranks, p = self.ranks, self.p
        while len(pieces) > 1:
            best, at = None, -1
            for i in range(len(pieces) - 1):
                rank = ranks.get((pieces[i], pieces[i + 1]))
                if rank is not None and (best is None or rank < best) and (p == 0 or rng.random() >= p):
                    best, at = rank, i
            if best is None:
                break
            pieces[at : at + 2] = [pieces[at] + pieces[at + 1]]
        return pieces

    def encode_words(self, words: list[str], rng: random.Random) -> list[int]:
        """Token ids of a sentence given as its `words` (from `words`), segmented with dropout."""
        vocab = self.vocab
        return [vocab[piece] for word in words for piece in self.segment(word, rng)]

    def encode(self, text: str, rng: random.Random) -> list[int]:
        """Token ids of `text` (no special tokens), segmented with dropout."""
        return self.encode_words(self.words(text), rng)
