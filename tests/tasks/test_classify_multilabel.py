"""Multi-label classification (`--multi-label`, the `reuters_90` form): sigmoid per class, F1 metrics."""

from __future__ import annotations

import json
import random

import pytest

from attnkit.cli import main
from attnkit.tasks.classify import ClassifyOptions
from tests.fixtures import FILLER, TINY_MODEL, TOPICS, write_csv

SETS = [["finance"], ["science"], ["sports"], ["finance", "sports"], ["science", "sports"], ["finance", "science"]]


def make_multilabel(n: int, seed: int) -> list[tuple[str, str]]:
    """n (text, "a|b") pairs: each text mixes the words of its one or two topics."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topics = SETS[i % len(SETS)]
        words = [
            rng.choice(TOPICS[rng.choice(topics)]) if rng.random() < 0.7 else rng.choice(FILLER)
            for _ in range(rng.randint(8, 14))
        ]
        rows.append((" ".join(words), "|".join(topics)))
    return rows


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    train = write_csv(root / "train.csv", make_multilabel(240, seed=1))
    test = write_csv(root / "test.csv", make_multilabel(60, seed=2))
    run = root / "run"
    args = ["train", "classify", "--train", str(train), "--test", str(test), "--out", str(run), "--multi-label"]
    assert main([*args, "--epochs", "8", "--metric", "micro_f1", *TINY_MODEL]) == 0
    return run, test


def test_multilabel_training_learns_label_sets(multilabel_run, capsys):
    run, _ = multilabel_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"micro_f1", "macro_f1", "accuracy"}
    assert metrics["micro_f1"] >= 0.85
    assert not (run / "confusion.png").exists()  # no confusion matrix for label sets
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["finance", "science", "sports"]
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"val_micro_f1", "val_macro_f1", "val_accuracy", "val_loss"} <= set(header)


def test_multilabel_evaluate_reproduces_test_metrics(multilabel_run, capsys):
    run, test = multilabel_run
    before = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run), "--data", str(test)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == pytest.approx(before)


def test_multilabel_predict_returns_the_set_above_threshold(multilabel_run, capsys):
    run, _ = multilabel_run
    text = "goal match stock shares striker market team profit"
    assert main(["predict", str(run), text]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    labels = sorted(line.split("\t")[0].strip() for line in lines[1:])
    assert labels == ["finance", "sports"]
    assert main(["predict", str(run), text, "--top-k", "3"]) == 0
    ranked = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert len(ranked) == 3 and ranked[-1][0].strip() == "science"  # the top 3, under the threshold too
    probabilities = [float(p) for _, p in ranked]
    assert probabilities == sorted(probabilities, reverse=True)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_multilabel_predict_file_to_file(multilabel_run, tmp_path, suffix, capsys):
    run, _ = multilabel_run
    texts = ["research cells genome lab telescope", "goal match stock shares striker market team profit"]
    expected = []
    for text in texts:  # each line's set as `predict` gives it for that text alone
        assert main(["predict", str(run), text]) == 0
        lines = capsys.readouterr().out.strip().splitlines()[1:]
        expected.append(sorted(line.split("\t")[0].strip() for line in lines))
    assert expected[1] == ["finance", "sports"] and "science" in expected[0]
    inputs = tmp_path / "texts.txt"
    inputs.write_text("\n".join(texts) + "\n")
    out = tmp_path / f"predictions{suffix}"
    assert main(["predict", str(run), "--input", str(inputs), "--output", str(out)]) == 0
    text = out.read_text().strip().splitlines()
    if suffix == ".jsonl":
        records = [json.loads(line) for line in text]
        assert [sorted(r["labels"]) for r in records] == expected
        assert all(len(r["probabilities"]) == len(r["labels"]) for r in records)
    else:
        assert text[0] == "text,labels,probabilities"
        assert [sorted(row.split(",")[1].split("|")) for row in text[1:]] == expected


def test_reuters_90_is_multilabel_by_itself():
    assert ClassifyOptions(dataset="reuters_90").multi_label
    assert not ClassifyOptions(dataset="reuters_r8").multi_label


def _fails(args: list[str], capsys, expected: str) -> None:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert expected in err


def test_multilabel_bad_input(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", make_multilabel(30, seed=3))
    base = ["train", "classify", "--train", str(train), "--multi-label", "--epochs", "1", *TINY_MODEL]
    _fails([*base, "--out", str(tmp_path / "a"), "--threshold", "1.5"], capsys, "--threshold must be between 0 and 1")
    test = write_csv(tmp_path / "test.csv", [("goal match", "sports|weather")])
    _fails([*base, "--out", str(tmp_path / "b"), "--test", str(test)], capsys, "'weather' appear in the test data")
    empty = write_csv(tmp_path / "empty.csv", [*make_multilabel(30, seed=4), ("goal match", "|")])
    args = ["train", "classify", "--train", str(empty), "--multi-label", "--out", str(tmp_path / "c"), *TINY_MODEL]
    _fails(args, capsys, "has no label between the separators")
