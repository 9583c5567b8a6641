"""Translating ids with greedy or beam search, and scoring translations (sacreBLEU, chrF, tokenized BLEU)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from attnkit.data.batching import pad
from attnkit.decode import Penalty, Seq2SeqStepper, Stepper, beam_search, greedy_decode
from attnkit.metrics import bleu, bleu_breakdown, chrf, moses_tokenize, tokenized_bleu
from attnkit.models import Translator

Search = Literal["greedy", "beam"]


def translate_ids(
    model: Translator,
    sources: list[list[int]],
    *,
    search: Search = "beam",
    beam: int = 4,
    alpha: float = 0.6,
    extra_len: int = 50,
    batch_size: int = 64,
    use_cache: bool = True,
    device: torch.device | str = "cpu",
    penalty: Penalty = "gnmt",
    min_len: int = 0,
    stepper: Callable[[torch.Tensor], Stepper] | None = None,
) -> list[list[int]]:
    """Target token ids (without BOS/EOS) for each source, in order; batches sorted by length. The
    model's own `bos_id`, `eos_id` and pad id start, end and fill the rows (an imported Marian's differ
    from attnkit's). No translation ends before `min_len` tokens (eos is not generated sooner).
    `stepper(src (B, S))` makes the stepper that decodes a batch (default: `Seq2SeqStepper` on `model`;
    `attnkit serve --backend onnx` passes one over the exported graphs)."""
    bos, eos, pad_id = model.bos_id, model.eos_id, model.config.pad_id
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        src = pad([sources[i] for i in chunk], pad_id).to(device)  # (B, S)
        limit = torch.tensor([len(sources[i]) + extra_len for i in chunk], device=src.device)
        room = model.config.max_len - 1
        limit = limit.clamp(max=room)
        steps = stepper(src) if stepper is not None else Seq2SeqStepper(model, src, use_cache=use_cache)
        first = torch.full((len(chunk),), bos, device=src.device)
        if search == "greedy":
            tokens = greedy_decode(
                steps, first, eos_id=eos, max_new_tokens=limit, pad_id=pad_id, min_new_tokens=min_len
            )
        else:
            tokens = beam_search(
                steps,
                first,
                eos_id=eos,
                max_new_tokens=limit,
                beam_size=beam,
                alpha=alpha,
                pad_id=pad_id,
                penalty=penalty,
                min_new_tokens=min_len,
            ).tokens
        for row, index in enumerate(chunk):
            ids = tokens[row].tolist()
            out[index] = ids[: ids.index(eos)] if eos in ids else [t for t in ids if t != pad_id]
    return out


def score(
    hypotheses: list[str], references: list[str], ref_tok: list[str] | None, tgt_lang: str, prefix: str = ""
) -> tuple[dict[str, float], dict[str, str]]:
    """sacreBLEU (cased, detokenized) and chrF; tokenized lowercased BLEU when references are given.

    Returns the scores under `prefix` + "bleu", "chrf", "tok_bleu", and for each metric the text to
    print beside it: its signature, and for the BLEUs also the precisions and brevity penalty
    (under "bleu_breakdown" and "tok_bleu_breakdown")."""
    b, c = bleu(hypotheses, references), chrf(hypotheses, references)
    metrics = {f"{prefix}bleu": b["score"], f"{prefix}chrf": c["score"]}
    notes = {"bleu": b["signature"], "chrf": c["signature"], "bleu_breakdown": bleu_breakdown(b)}
    if ref_tok is not None:
        t = tokenized_bleu(moses_tokenize(hypotheses, tgt_lang), ref_tok)
        metrics[f"{prefix}tok_bleu"] = t["score"]
        notes["tok_bleu"] = t["signature"] + " (hypotheses lowercased and Moses-tokenized)"
        notes["tok_bleu_breakdown"] = bleu_breakdown(t)
    return metrics, notes
