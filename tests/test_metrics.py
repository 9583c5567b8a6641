"""Metrics against hand-computed values, scikit-learn's definitions and sacreBLEU's own functions."""

import math
from pathlib import Path

import pytest
import sacrebleu
import torch

from attnkit.data.readers import read_lines
from attnkit.metrics import (
    bleu,
    bleu_breakdown,
    chrf,
    classification_report,
    confusion_matrix,
    moses_tokenize,
    multilabel_report,
    tokenized_bleu,
)

MULTI30K = Path("/work/shared/data/multi30k")


def test_confusion_and_report_by_hand():
    target = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    assert confusion_matrix(pred, target, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    report = classification_report(pred, target, 3)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["precision"] == pytest.approx([1.0, 0.5, 0.5])
    assert report["recall"] == pytest.approx([2 / 3, 0.5, 1.0])
    f1 = [2 * p * r / (p + r) for p, r in zip([1.0, 0.5, 0.5], [2 / 3, 0.5, 1.0], strict=True)]
    assert report["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert report["support"] == [3, 2, 1]


def test_absent_and_never_predicted_classes():
    target = torch.tensor([0, 0, 1])
    pred = torch.tensor([0, 0, 0])
    report = classification_report(pred, target, 3)  # class 2 absent from the targets
    assert report["precision"][1] == 0.0 and report["recall"][1] == 0.0
    assert report["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)


def test_multilabel_report_by_hand():
    # 4 examples, 3 classes; class 2 never occurs in the targets.
    target = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.bool)
    pred = torch.tensor([[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    report = multilabel_report(pred, target)
    assert report["accuracy"] == pytest.approx(2 / 4)  # rows 0 and 2 match exactly
    # class 0: tp 2, predicted 2, support 3; class 1: tp 1, predicted 1, support 2; class 2: fp 1.
    assert report["precision"] == pytest.approx([1.0, 1.0, 0.0])
    assert report["recall"] == pytest.approx([2 / 3, 0.5, 0.0])
    assert report["support"] == [3, 2, 0]
    f1_0, f1_1 = 2 * 2 / (2 + 3), 2 * 1 / (1 + 2)
    assert report["macro_f1"] == pytest.approx((f1_0 + f1_1) / 2)  # class 2 is absent: left out
    assert report["micro_f1"] == pytest.approx(2 * 3 / (4 + 5))  # tp 3, predicted 4, true 5


def test_multilabel_report_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(50, 6, generator=generator) < 0.3
    pred = torch.rand(50, 6, generator=generator) < 0.3
    report = multilabel_report(pred, target)
    assert report["micro_f1"] == pytest.approx(metrics.f1_score(target, pred, average="micro"))
    assert report["macro_f1"] == pytest.approx(metrics.f1_score(target, pred, average="macro"))
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(target, pred))


def test_multilabel_report_checks_shapes():
    with pytest.raises(ValueError, match="must both be"):
        multilabel_report(torch.zeros(3, 2, dtype=torch.bool), torch.zeros(3, 4, dtype=torch.bool))


HYPS = ["The cat sat on a mat.", "A dog is running in the park today.", "Two men play chess"]
REFS = ["The cat sat on the mat.", "A dog runs in the park.", "Two men are playing chess."]


def test_bleu_identical_is_100_and_signature():
    result = bleu(REFS, REFS)
    assert result["score"] == pytest.approx(100.0)
    assert result["bp"] == pytest.approx(1.0) and result["hyp_len"] == result["ref_len"]
    signature = result["signature"]
    assert "tok:13a" in signature and "case:mixed" in signature and "nrefs:1" in signature


def test_bleu_and_chrf_equal_sacrebleu_corpus_functions():
    result = bleu(HYPS, REFS)
    expected = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert result["score"] == pytest.approx(expected.score)
    assert result["precisions"] == pytest.approx(expected.precisions)
    assert 0 < result["score"] < 100
    assert chrf(HYPS, REFS)["score"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)


def test_bleu_breakdown_matches_sacrebleus_own_line():
    # A hypothesis shorter than its reference: the score is the precisions' geometric mean times the
    # brevity penalty exp(1 - ref_len / hyp_len), and the line shows both parts with sacreBLEU's figures.
    short = ["A man rides a horse.", "Two dogs play."]
    references = ["A man rides a brown horse on the beach.", "Two dogs play in the snow."]
    report = bleu(short, references)
    expected = sacrebleu.corpus_bleu(short, [references])
    assert (report["hyp_len"], report["ref_len"]) == (10, 17)  # 13a splits off the periods
    assert report["bp"] == pytest.approx(math.exp(1 - 17 / 10))
    line = bleu_breakdown(report)
    assert "/".join(f"{p:.1f}" for p in expected.precisions) in line
    assert f"brevity penalty {math.exp(1 - 17 / 10):.3f}" in line and "10 tokens against the references' 17" in line
    assert bleu_breakdown(bleu(REFS, REFS)).startswith("n-grams 100.0/100.0/100.0/100.0, brevity penalty 1.000")


def test_bleu_is_cased_and_detokenized():
    reference = ["A man rides a horse on the beach."]
    # 13a splits the attached period off the reference, so a tokenized hypothesis still matches it in full...
    assert bleu(["A man rides a horse on the beach ."], reference)["score"] == pytest.approx(100.0)
    # ...and case counts: "a" is not "A".
    assert bleu(["a man rides a horse on the beach ."], reference)["score"] < 100


def test_chrf_identical_is_100():
    result = chrf(REFS, REFS)
    assert result["score"] == pytest.approx(100.0)
    assert "nc:6" in result["signature"] and "case:mixed" in result["signature"]


def test_tokenized_bleu_lowercases_and_splits_at_whitespace_only():
    result = tokenized_bleu(["A Man rides a Horse on the Beach ."], ["a man rides a horse on the beach ."])
    assert result["score"] == pytest.approx(100.0)
    assert "case:lc" in result["signature"] and "tok:none" in result["signature"]
    # No tokenizer of its own: an attached period is another token than the reference's "beach" ".".
    assert tokenized_bleu(["a man rides a horse on the beach."], ["a man rides a horse on the beach ."])["score"] < 100


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no sentences"):
        chrf([], [])
    with pytest.raises(TypeError, match="lists of sentences"):
        tokenized_bleu("a b", "a b")


def test_moses_tokenize_by_hand():
    assert moses_tokenize(['A Boston Terrier\'s toy, "Rex".'], "en") == [
        "a boston terrier &apos;s toy , &quot; rex . &quot;"
    ]
    # German: a closing quote goes before the final period, as normalize-punctuation.perl -l de does.
    assert moses_tokenize(["Ein Hemd, auf dem steht: \u201eIch bin der Boss.\u201c"], "de") == [
        "ein hemd , auf dem steht : &quot; ich bin der boss &quot; ."
    ]
    assert moses_tokenize(["Keep Case"], "en", lowercase=False) == ["Keep Case"]


# moses_tokenize reproduces every line of tok/ for train, val, test_2016_flickr and the two 2017 sets, in both
# languages (67087 of 67092 lines in all). The five lines that differ are all in test_2018_flickr, whose tok/
# files upstream's scripts/task1-tokenize.sh does not make (its loop stops at 2017), and they look made from another
# version of the raw text or by another process: en line 33 has "sign:" where raw/ has "sign :", en line 807 "6: 51"
# (a colon left attached; Moses splits it), en line 204 "(photo ... white) " (brackets not split off, a trailing
# space), and de lines 33 and 1034 end in `. &quot;` where normalize-punctuation -l de puts the period after the
# quote, as every other split's tok/ file does.
@pytest.mark.skipif(not MULTI30K.is_dir(), reason=f"{MULTI30K} not present")
@pytest.mark.parametrize("lang", ["en", "de"])
def test_moses_tokenize_reproduces_multi30k_tok_files(lang):
    raw = read_lines(MULTI30K / "raw" / f"test_2016_flickr.{lang}.gz")[:100]
    tok = read_lines(MULTI30K / "tok" / f"test_2016_flickr.lc.norm.tok.{lang}.gz")[:100]
    ours = moses_tokenize(raw, lang)
    mismatches = [
        (i + 1, mine, theirs) for i, (mine, theirs) in enumerate(zip(ours, tok, strict=True)) if mine != theirs
    ]
    assert mismatches == []  # match rate 100/100 (and 1000/1000 over the whole test set)
    assert tokenized_bleu(ours, tok)["score"] == pytest.approx(100.0)
