"""Subword and character tokenizers trained with Hugging Face `tokenizers` on the training split only.

Kinds: "wordpiece" (BERT's), "bpe", "char" (one token per character, the usual input for
Chinese), and "bytebpe" (GPT-2's byte-level BPE: cased, no unknown tokens, and decoding gives back
the exact text, which translation and language modelling need). The BERT normaliser puts spaces
around CJK characters, so WordPiece and BPE also treat each Chinese character as its own word.
Special tokens take the first ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4. Saved as one `tokenizer.json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from attnkit.errors import DataError

TokenizerKind = Literal["wordpiece", "bpe", "char", "bytebpe"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)


def train_tokenizer(
    texts: Iterable[str],
    *,
    kind: TokenizerKind = "wordpiece",
    vocab_size: int = 16000,
    lowercase: bool = True,
) -> Tokenizer:
    """Train a tokenizer of `kind` on `texts` (the training split only: never the test set).

    `lowercase` applies to wordpiece, bpe and char; bytebpe keeps the text as it is (NFC only).
    """
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    elif kind == "bytebpe":
        tokenizer = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # exact round trip
        tokenizer.decoder = decoders.ByteLevel()
        normalizer = normalizers.NFC()
    elif kind == "char":
        tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
        )
    else:
        raise DataError(f"unknown tokenizer kind {kind!r}: use wordpiece, bpe, char or bytebpe")
    tokenizer.normalizer = normalizer
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer = _sorted_ids(tokenizer)
    for expected, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != expected:
            raise RuntimeError(f"special token {token} did not get id {expected}")
    return tokenizer


def _sorted_ids(tokenizer: Tokenizer) -> Tokenizer:
    """Renumber the vocabulary: special tokens first, then the others in string order.

    The trainers break ties between equally frequent tokens in hash-map order, which changes from
    one process to the next, so the same data and settings could give the same tokens different ids
    (and a model trained twice with one seed different weights). Ids carry no meaning for WordPiece
    and word-level models, and BPE merges are stored as strings, so renumbering changes nothing else.
    """
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    ordered = SPECIAL_TOKENS + sorted(token for token in vocab if token not in SPECIAL_TOKENS)
    data["model"]["vocab"] = {token: index for index, token in enumerate(ordered)}
    for added in data.get("added_tokens") or []:
        added["id"] = data["model"]["vocab"][added["content"]]
    return Tokenizer.from_str(json.dumps(data))


def load_tokenizer(path: Path | str) -> Tokenizer:
    """Load a `tokenizer.json`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no tokenizer file")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises plain Exception subclasses from Rust
        raise DataError(f"{path}: not a valid tokenizer file ({error})") from None


@dataclass
class Encoded:
    """Token ids per text and how many texts were cut to the maximum length."""

    ids: list[list[int]]
    truncated: int


def framing(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The ids a text is framed with for an encoder: ([CLS], none) for attnkit's own tokenizers; a
    tokenizer with its own post-processor (an imported BERT's "[CLS] $A [SEP]") frames as it says."""
    if tokenizer.post_processor is None:
        return [CLS_ID], []
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    framed = tokenizer.encode("a", add_special_tokens=True).ids
    start = next(i for i in range(len(framed) - len(plain) + 1) if framed[i : i + len(plain)] == plain)
    return framed[:start], framed[start + len(plain) :]


def unknown_id(tokenizer: Tokenizer) -> int | None:
    """The id of [UNK] (attnkit's and BERT's name for it), or None when the tokenizer has none."""
    return tokenizer.token_to_id("[UNK]")


def encode_texts(tokenizer: Tokenizer, texts: list[str], max_len: int, *, cls: bool = True) -> Encoded:
    """Ids of each text, framed when `cls` ([CLS] first; see `framing`), cut to `max_len` tokens in all."""
    prefix, suffix = framing(tokenizer) if cls else ([], [])
    room = max_len - len(prefix) - len(suffix)
    ids, truncated = [], 0
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        tokens = encoding.ids
        if len(tokens) > room:
            truncated += 1
            tokens = tokens[:room]
        ids.append(prefix + tokens + suffix)
    return Encoded(ids, truncated)


def doubts(tokenizer: Tokenizer, texts: list[str], max_len: int, *, cls: bool = True) -> list[str | None]:
    """For each text, why a prediction from it deserves doubt, or None: nothing left after
    tokenization, cut to `max_len` tokens, or mostly tokens the tokenizer never saw ([UNK])."""
    framed = sum(map(len, framing(tokenizer))) if cls else 0
    room, unknown = max_len - framed, unknown_id(tokenizer)
    found: list[str | None] = []
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        tokens = encoding.ids
        if not tokens:
            found.append("no token after tokenization: the prediction rests on nothing")
        elif sum(t == unknown for t in tokens) * 2 > len(tokens):
            found.append(f"{sum(t == unknown for t in tokens)} of {len(tokens)} tokens are unknown to the tokenizer")
        elif len(tokens) > room:
            found.append(f"cut to {max_len} tokens of {len(tokens) + framed}")
        else:
            found.append(None)
    return found


def decode_text(tokenizer: Tokenizer, ids: list[int]) -> str:
    """Text of token ids, special tokens dropped (for bytebpe, exactly the text that was encoded)."""
    return tokenizer.decode(ids, skip_special_tokens=True)
