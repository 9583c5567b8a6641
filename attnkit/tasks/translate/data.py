"""Translation data: the parallel splits the options name, sentences as ids, batches by token count."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attnkit.data.batching import pad, token_bucketed_plan
from attnkit.data.bpe_dropout import BPEDropout
from attnkit.data.datasets import multi30k_files
from attnkit.data.parallel import ParallelTexts, read_parallel, read_tsv_pairs
from attnkit.data.tokenizer import CLS_ID, PAD_ID, SEP_ID
from attnkit.engine import Batches
from attnkit.tasks.translate.options import TranslateOptions

BOS_ID, EOS_ID = CLS_ID, SEP_ID  # the shared vocabulary's [CLS] and [SEP] start and end sentences


@dataclass(frozen=True)
class Specials:
    """The ids that start, end and pad sentences: attnkit's vocabulary's, or an imported model's
    (Marian: decoder start = pad, eos 0)."""

    bos: int = BOS_ID
    eos: int = EOS_ID
    pad: int = PAD_ID


@dataclass
class Encoded:
    """Sentences as ids: sources end with EOS; targets are BOS + tokens + EOS.

    With `dropout`, `words` holds each pair's pre-tokenized source and target words, which every
    batch segments afresh; `src` and `tgt` (the plain segmentation) then only size the batches.
    """

    src: list[list[int]]
    tgt: list[list[int]]
    truncated: int
    max_len: int
    dropout: BPEDropout | None = None
    words: list[tuple[list[str], list[str]]] | None = None
    specials: Specials = Specials()

    def batches(self, max_tokens: int, *, shuffle: bool, seed: int) -> Batches:
        lengths = [len(s) + len(t) for s, t in zip(self.src, self.tgt, strict=True)]
        plan = token_bucketed_plan(lengths, max_tokens, shuffle=shuffle, seed=seed)
        dropout, words, max_len, specials = self.dropout, self.words, self.max_len, self.specials

        def collate(indices: list[int]) -> dict[str, Tensor]:
            if dropout is None:
                src, tgt = [self.src[i] for i in indices], [self.tgt[i] for i in indices]
            else:
                # Seeded from the torch generator, whose state the checkpoints keep: runs repeat and resume exactly.
                rng = random.Random(int(torch.randint(2**62, ())))
                src = [source_ids(dropout.encode_words(words[i][0], rng), max_len)[0] for i in indices]
                tgt = [target_ids(dropout.encode_words(words[i][1], rng), max_len)[0] for i in indices]
            padded = pad(tgt, specials.pad)  # (B, T + 1)
            return {"src": pad(src, specials.pad), "tgt_in": padded[:, :-1], "tgt_out": padded[:, 1:]}

        return Batches(plan, collate)


def source_ids(ids: list[int], max_len: int, eos: int = EOS_ID) -> tuple[list[int], bool]:
    """A source's ids + EOS, cut to `max_len` in all, and whether it was cut."""
    cut = len(ids) > max_len - 1
    return [*ids[: max_len - 1], eos], cut


def target_ids(ids: list[int], max_len: int, specials: Specials = Specials()) -> tuple[list[int], bool]:
    """BOS + a target's ids + EOS, cut to `max_len` in all, and whether it was cut."""
    cut = len(ids) > max_len - 2
    return [specials.bos, *ids[: max_len - 2], specials.eos], cut


def encode_sources(tokenizer: Any, texts: list[str], max_len: int, eos: int = EOS_ID) -> tuple[list[list[int]], int]:
    """Source ids (tokens + `eos`, cut to max_len) and how many sentences were cut."""
    encoded = [source_ids(e.ids, max_len, eos) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [ids for ids, _ in encoded], sum(cut for _, cut in encoded)


def encode_pairs(
    tokenizer: Any,
    pairs: ParallelTexts,
    max_len: int,
    *,
    dropout: BPEDropout | None = None,
    specials: Specials = Specials(),
) -> Encoded:
    """The pairs as ids; with `dropout`, also their pre-tokenized words, for batches segmented with it.
    A tokenizer with its own target side (`encode_targets`, an imported Marian's) segments targets with it."""
    src, cut_src = encode_sources(tokenizer, pairs.src, max_len, specials.eos)
    if hasattr(tokenizer, "encode_targets"):
        pieces = tokenizer.encode_targets(pairs.tgt)
    else:
        pieces = tokenizer.encode_batch(pairs.tgt, add_special_tokens=False)
    encoded = [target_ids(e.ids, max_len, specials) for e in pieces]
    tgt, cut_tgt = [ids for ids, _ in encoded], sum(cut for _, cut in encoded)
    words = None
    if dropout is not None:
        words = [(dropout.words(s), dropout.words(t)) for s, t in zip(pairs.src, pairs.tgt, strict=True)]
    return Encoded(src, tgt, cut_src + cut_tgt, max_len, dropout, words, specials)


def resolve_dataset(options: TranslateOptions) -> TranslateOptions:
    """Options with a standard dataset's files filled in (explicit file options win)."""
    if not options.dataset:
        return options
    files = multi30k_files(options.src_lang, options.tgt_lang, options.data_dir)
    chosen = {k: str(v) for k, v in files.items() if getattr(options, k) is None}
    return dataclasses.replace(options, dataset=None, **chosen)


def read_split(options: TranslateOptions, side: str) -> ParallelTexts | None:
    src, tgt, pairs = (getattr(options, f"{side}_{k}") for k in ("src", "tgt", "pairs"))
    if src:
        return read_parallel(src, tgt)
    if pairs:
        return read_tsv_pairs(pairs)
    return None
