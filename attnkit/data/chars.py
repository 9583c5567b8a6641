"""A character-level vocabulary for language modelling (nanoGPT's shakespeare_char): one id per
distinct character of the training text, whitespace and newlines included, saved as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from attnkit.atomic import atomic_path
from attnkit.errors import DataError


class CharVocab:
    """Characters <-> ids; ids follow the sorted order of the characters.

    Args:
        chars: the distinct characters.
    """

    def __init__(self, chars: list[str]) -> None:
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("chars must be distinct single characters")
        self.chars = sorted(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The vocabulary of every character in `text`."""
        if not text:
            raise DataError("cannot build a character vocabulary from empty text")
        return cls(list(set(text)))

    def get_vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` that are not in the vocabulary, sorted."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of `text`; a character outside the vocabulary is a DataError."""
        missing = self.unknown(text)
        if missing:
            shown = ", ".join(repr(c) for c in missing[:10])
            raise DataError(f"{len(missing)} character(s) are not in the model's vocabulary: {shown}")
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def save(self, path: str | Path) -> None:
        with atomic_path(Path(path)) as tmp:
            tmp.write_text(json.dumps({"kind": "char", "chars": self.chars}, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharVocab:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["chars"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"{path}: not a character vocabulary ({error})") from None
