"""The tokenizer of an imported Marian (OPUS-MT) translator: two SentencePiece models and one vocabulary.

Marian segments the source with `source.spm` and the target with `target.spm`, and numbers the pieces
through `vocab.json` (not SentencePiece's own ids); a piece the vocabulary lacks is `<unk>`. Sources
end with `</s>`; decoding maps ids back to pieces and joins them with the target model. This is what
transformers' `MarianTokenizer` does (without its optional Moses punctuation normalisation, which it
applies only when `sacremoses` is installed). Needs the `sentencepiece` package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from attnkit.errors import DataError

FILES = ("source.spm", "target.spm", "vocab.json")


@dataclass
class Pieces:
    """One encoded text, shaped as a `tokenizers` encoding where attnkit reads it: `.ids`."""

    ids: list[int]
    tokens: list[str]


class MarianTokenizer:
    """Source and target SentencePiece models over one vocabulary, behind the part of the `tokenizers`
    interface the translate task uses: `encode_batch` (sources), `encode` and `encode_targets` (targets), `decode`,
    `id_to_token`, `token_to_id`, `get_vocab_size`.

    Args:
        directory: holds source.spm, target.spm and vocab.json.
    """

    def __init__(self, directory: Path | str) -> None:
        try:
            import sentencepiece
        except ImportError:
            raise DataError("a Marian run needs the sentencepiece package: pip install 'attnkit[hf]'") from None
        directory = Path(directory)
        missing = [name for name in FILES if not (directory / name).is_file()]
        if missing:
            raise DataError(f"{directory}: no {missing[0]} (a Marian tokenizer is {', '.join(FILES)})")
        try:
            vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise DataError(f"{directory / 'vocab.json'}: cannot be read ({error})") from None
        if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
            raise DataError(f"{directory / 'vocab.json'}: not a token -> id mapping")
        self.vocab: dict[str, int] = vocab
        self.pieces = {i: token for token, i in vocab.items()}
        if "<unk>" not in vocab:
            raise DataError(f"{directory / 'vocab.json'}: has no <unk>")
        self.unk_id = vocab["<unk>"]
        self.specials = {vocab[t] for t in ("</s>", "<pad>", "<unk>") if t in vocab}
        try:
            self.source = sentencepiece.SentencePieceProcessor(model_file=str(directory / "source.spm"))
            self.target = sentencepiece.SentencePieceProcessor(model_file=str(directory / "target.spm"))
        except (OSError, RuntimeError) as error:
            raise DataError(f"{directory}: a SentencePiece model cannot be read ({error})") from None

    def _ids(self, pieces: list[str]) -> Pieces:
        return Pieces([self.vocab.get(p, self.unk_id) for p in pieces], pieces)

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[Pieces]:
        """Source sentences as pieces and ids (without `</s>`, which the task appends)."""
        return [self._ids(self.source.encode(text, out_type=str)) for text in texts]

    def encode(self, text: str, add_special_tokens: bool = False) -> Pieces:
        """A target sentence as pieces and ids (teacher forcing, scoring)."""
        return self._ids(self.target.encode(text, out_type=str))

    def encode_targets(self, texts: list[str]) -> list[Pieces]:
        """Target sentences as pieces and ids (training pairs), with the target model."""
        return [self.encode(text) for text in texts]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """The target text of `ids`; special tokens are dropped."""
        kept = [self.pieces.get(i, "<unk>") for i in ids if not (skip_special_tokens and i in self.specials)]
        # Pieces the target model does not know come back with their word-start marks: spaces, as
        # transformers' MarianTokenizer makes them.
        return self.target.decode_pieces(kept).replace("\u2581", " ").strip()

    def id_to_token(self, index: int) -> str | None:
        return self.pieces.get(index)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def get_vocab_size(self) -> int:
        return len(self.vocab)
