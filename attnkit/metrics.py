"""Evaluation metrics: accuracy and F1 from predictions and targets (tensors), checked against hand
counts; BLEU (Papineni et al., 2002) and chrF (Popović, 2015) for translation, through sacreBLEU
(Post, 2018) so that scores come with a signature and can be compared with published ones.
"""

from __future__ import annotations

import torch
from sacrebleu.metrics import BLEU, CHRF
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, n_classes: int) -> Tensor:
    """counts[i, j] = examples of true class i predicted as j; (C, C) long."""
    index = target.long() * n_classes + pred.long()
    return torch.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_report(pred: Tensor, target: Tensor, n_classes: int) -> dict[str, object]:
    """Accuracy, macro-F1, and per-class precision, recall, F1 and support.

    A class never predicted has precision 0; a class absent from the targets is left out of the
    macro average (its recall is undefined), as scikit-learn does with `labels` unset.
    """
    counts = confusion_matrix(pred, target, n_classes).double()
    true_pos = counts.diag()
    support = counts.sum(dim=1)  # examples per true class
    predicted = counts.sum(dim=0)
    precision = torch.where(predicted > 0, true_pos / predicted.clamp(min=1), torch.zeros_like(true_pos))
    recall = torch.where(support > 0, true_pos / support.clamp(min=1), torch.zeros_like(true_pos))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(denom))
    present = support > 0
    return {
        "accuracy": float(true_pos.sum() / counts.sum().clamp(min=1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.long().tolist(),
        "confusion": counts.long().tolist(),
    }


def multilabel_report(pred: Tensor, target: Tensor) -> dict[str, object]:
    """Micro- and macro-F1, subset accuracy, and per-class precision, recall, F1 and support.

    For multi-label classification (Reuters-21578's 90 ModApte topics): each example has a set of
    classes. Micro averaging pools every (example, class) decision, so frequent classes dominate;
    macro averaging is the mean of per-class F1 over the classes present in the targets, as
    `classification_report` does. "accuracy" is the share of examples whose predicted set equals
    the true set exactly (scikit-learn's `accuracy_score` on indicator matrices).

    Args:
        pred: (N, C) bool, the predicted sets.
        target: (N, C) bool, the true sets.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"pred and target must both be (N, C); got {tuple(pred.shape)} and {tuple(target.shape)}")
    pred, target = pred.bool(), target.bool()
    true_pos = (pred & target).sum(dim=0).double()  # (C,)
    predicted = pred.sum(dim=0).double()
    support = target.sum(dim=0).double()

    def f1_of(tp: Tensor, n_pred: Tensor, n_true: Tensor) -> Tensor:
        denom = n_pred + n_true
        return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))

    precision = torch.where(predicted > 0, true_pos / predicted.clamp(min=1), torch.zeros_like(true_pos))
    recall = torch.where(support > 0, true_pos / support.clamp(min=1), torch.zeros_like(true_pos))
    f1 = f1_of(true_pos, predicted, support)
    present = support > 0
    return {
        "accuracy": float((pred == target).all(dim=1).double().mean()) if len(pred) else 0.0,
        "micro_f1": float(f1_of(true_pos.sum(), predicted.sum(), support.sum())),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.long().tolist(),
    }


def _check_corpus(hypotheses: list[str], references: list[str]) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("hypotheses and references are lists of sentences, not single strings")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references; they must pair up")
    if not hypotheses:
        raise ValueError("no sentences to score")


def _bleu_report(metric: BLEU, hypotheses: list[str], references: list[str]) -> dict[str, object]:
    _check_corpus(hypotheses, references)
    result = metric.corpus_score(hypotheses, [references])
    return {
        "score": result.score,
        "signature": str(metric.get_signature()),
        "precisions": list(result.precisions),  # 1- to 4-gram precisions, in percent
        "bp": result.bp,
        "hyp_len": result.sys_len,
        "ref_len": result.ref_len,
    }


def bleu_breakdown(report: dict[str, object]) -> str:
    """The parts of a `bleu` or `tokenized_bleu` report behind its score, as one line: the 1- to 4-gram
    precisions and the brevity penalty with the lengths it comes from, e.g.
    "n-grams 70.5/47.2/33.8/24.6, brevity penalty 0.979 (11,856 tokens against the references' 12,103)".

    BLEU multiplies the geometric mean of the precisions by the brevity penalty, so this line says
    whether a score is low because the words are wrong or because the output is too short.
    """
    precisions = "/".join(f"{p:.1f}" for p in report["precisions"])  # type: ignore[union-attr]
    return (
        f"n-grams {precisions}, brevity penalty {report['bp']:.3f} "
        f"({report['hyp_len']:,} tokens against the references' {report['ref_len']:,})"
    )


def bleu(hypotheses: list[str], references: list[str]) -> dict[str, object]:
    """Corpus BLEU as sacreBLEU reports it: detokenized, cased text, its `13a` tokenizer, exp smoothing.

    This is the comparable number (the WMT convention). Give it raw system output and raw references
    (e.g. Multi30k's `raw/` files), not tokenized or lowercased text.

    Args:
        hypotheses: one detokenized system output per sentence.
        references: the one reference translation of each sentence, in the same order.

    Returns:
        `score` (0-100), `signature` (e.g. "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0";
        report it with the score), `precisions` (1- to 4-gram, percent), `bp` (brevity penalty),
        `hyp_len` and `ref_len` (tokens).
    """
    return _bleu_report(BLEU(), hypotheses, references)


def chrf(hypotheses: list[str], references: list[str]) -> dict[str, object]:
    """Corpus chrF as sacreBLEU reports it (character 6-grams, beta 2, no word n-grams; cased).

    Args:
        hypotheses: one detokenized system output per sentence.
        references: the one reference translation of each sentence, in the same order.

    Returns:
        `score` (0-100) and `signature` (e.g. "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0").
    """
    _check_corpus(hypotheses, references)
    metric = CHRF()
    return {"score": metric.corpus_score(hypotheses, [references]).score, "signature": str(metric.get_signature())}


def tokenized_bleu(hypotheses: list[str], references: list[str]) -> dict[str, object]:
    """Lowercased BLEU on text that is already tokenized: tokens are split at whitespace only.

    This is the number most multimodal-MT papers report on Multi30k (multi-bleu.perl -lc, fairseq's
    BLEU4): references are the `tok/*.lc.norm.tok.*` files, and the hypotheses go through the same
    preprocessing first, `moses_tokenize(detokenized_output, lang)`. It depends on that tokenization,
    so it is not comparable across tokenizations; report `bleu` beside it.

    Returns:
        The same keys as `bleu`; the signature says `case:lc|tok:none`.
    """
    return _bleu_report(BLEU(tokenize="none", lowercase=True, force=True), hypotheses, references)


def moses_tokenize(lines: list[str], lang: str, *, lowercase: bool = True) -> list[str]:
    """Multi30k's `lc.norm.tok` preprocessing: Moses lowercase.perl, normalize-punctuation.perl -l LANG,
    tokenizer.perl -l LANG (default XML escaping: `&apos;`, `&quot;`, `&amp;`), through sacremoses.

    On Multi30k it reproduces the `tok/` files of train, val and the 2016/2017 test sets exactly
    (67087 of all 67092 lines; the other five, all in test_2018_flickr, see tests/test_metrics.py).

    Args:
        lines: detokenized sentences (system output or `raw/` text).
        lang: language code for Moses' rules and non-breaking prefixes ("en", "de", ...).
        lowercase: lowercase first, as the `lc` in the file names says.

    Returns:
        One space-separated token string per line.
    """
    # Imported here, not at the top: it takes about 0.3 s (joblib, click), and only translation needs it.
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    # perl_parity: normalize-punctuation.perl maps ’ to a double quote (sacremoses' default maps it to ').
    normalizer = MosesPunctNormalizer(lang=lang, perl_parity=True)
    tokenizer = MosesTokenizer(lang=lang)
    result = []
    for line in lines:
        text = line.lower() if lowercase else line
        # The perl script reads each line with its newline, which its rule "move a period after a closing
        # quote, except at the end of the sentence" sees as a following character, so the rule does fire
        # at the end of a line (German `„... Boss.“` -> `" ... boss " .`). The newline is stripped again.
        text = normalizer.normalize(text + "\n")
        result.append(tokenizer.tokenize(text, escape=True, return_str=True))
    return result
