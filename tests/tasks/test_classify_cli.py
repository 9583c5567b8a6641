"""`attnkit train classify`, `evaluate` and `predict` end to end on small synthetic files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from attnkit.cli import main
from tests.averaging import assert_average_or_best
from tests.fixtures import TINY_MODEL, make_texts, write_csv, write_jsonl


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    train = write_csv(root / "train.csv", make_texts(150, seed=1))
    test = write_csv(root / "test.csv", make_texts(45, seed=2))
    run = root / "run"
    code = main(
        [
            "train",
            "classify",
            "--train",
            str(train),
            "--test",
            str(test),
            "--out",
            str(run),
            "--epochs",
            "6",
            *TINY_MODEL,
        ]
    )
    assert code == 0
    return run, test


def test_train_writes_a_complete_run(trained_run):
    run, _ = trained_run
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.json",
        "history.csv",
        "curves.png",
        "confusion.png",
        "last/state.json",
        "last/model.safetensors",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "macro_f1"}
    assert all(isinstance(v, float) for v in metrics.values())
    # Three topics told apart by their words: a working model separates them.
    assert metrics["accuracy"] >= 0.9
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"step", "train_loss", "val_accuracy", "val_loss"} <= set(header)


def test_evaluate_reproduces_test_metrics(trained_run, capsys):
    run, test = trained_run
    before = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run), "--data", str(test)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == pytest.approx(before)


def test_evaluate_defaults_to_the_runs_own_test_split(trained_run, copy_run, capsys):
    run, test = trained_run
    assert main(["evaluate", str(run)]) == 0
    own = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["evaluate", str(run), "--data", str(test)]) == 0
    assert own == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["evaluate", str(copy_run("classify"))]) == 2  # trained without a test split
    assert "needs --data FILE (labelled texts): it has no test split" in capsys.readouterr().err


def test_predict_single_texts_with_top_k(trained_run, capsys):
    run, _ = trained_run
    assert main(["predict", str(run), "goal match team striker cup", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("goal match")
    ranked = [line.split("\t") for line in lines[1:]]
    assert len(ranked) == 3
    assert ranked[0][0].strip() == "sports"
    probabilities = [float(p) for _, p in ranked]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1.5e-3 + 1e-9)  # three values printed to 3 decimals


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_predict_file_to_file(trained_run, tmp_path, suffix, capsys):
    run, _ = trained_run
    inputs = tmp_path / "texts.txt"
    inputs.write_text("stock market shares profit\n\nresearch cells physics lab\n")
    out = tmp_path / f"predictions{suffix}"
    assert main(["predict", str(run), "--input", str(inputs), "--output", str(out)]) == 0
    assert f"{inputs}: skipped 1 blank line" in capsys.readouterr().err  # why 2 answers for 3 lines
    text = out.read_text().strip().splitlines()
    if suffix == ".jsonl":
        records = [json.loads(line) for line in text]
        assert [r["label"] for r in records] == ["finance", "science"]
        assert all(0 < r["probability"] <= 1 for r in records)
    else:
        assert text[0] == "text,label,probability"
        assert [row.split(",")[1] for row in text[1:]] == ["finance", "science"]


def test_jsonl_training_and_held_out_validation(tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", make_texts(90, seed=3))
    run = tmp_path / "run"
    assert main(["train", "classify", "--train", str(train), "--out", str(run), "--epochs", "1", *TINY_MODEL]) == 0
    out = capsys.readouterr().out
    assert "held out 9 of the training examples" in out  # 10% of each of 3 classes of 30


# ------------------------------------------------------------------------ bad input: one line, exit 2


def _fails(args: list[str], capsys, expected: str) -> None:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    assert expected in err


def _train_args(train, run, *extra: str) -> list[str]:
    return [
        "train",
        "classify",
        "--train",
        str(train),
        "--out",
        str(run),
        "--epochs",
        "1",
        *TINY_MODEL,
        *extra,
    ]


def test_missing_file(tmp_path, capsys):
    _fails(_train_args(tmp_path / "nope.csv", tmp_path / "run"), capsys, "no such file")
    assert not (tmp_path / "run").exists()


def test_empty_file(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    _fails(_train_args(empty, tmp_path / "run"), capsys, "empty")


def test_misspelled_column(news_files, tmp_path, capsys):
    train, _ = news_files
    _fails(_train_args(train, tmp_path / "run", "--label-column", "lable"), capsys, "no column named 'lable'")


def test_non_utf8_bytes(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\nfine text,a\nbroken \xff\xfe text,b\n")
    _fails(_train_args(bad, tmp_path / "run"), capsys, "line 3 is not valid utf-8")


def test_label_only_in_test_file(news_files, tmp_path, capsys):
    train, _ = news_files
    test = write_csv(tmp_path / "test2.csv", [*make_texts(6, seed=5), ("quantum weather", "weather")])
    run = tmp_path / "run"
    _fails(_train_args(train, run, "--test", str(test)), capsys, "'weather' appear in the test data")
    assert not (run / "config.json").exists()  # nothing half-written


def test_blank_lines_and_empty_texts_are_handled(tmp_path, capsys):
    rows = make_texts(60, seed=4)
    path = tmp_path / "gaps.csv"
    lines = ["text,label"] + [f"{t},{label}" for t, label in rows]
    lines.insert(5, "")
    lines.insert(9, ",sports")  # an empty text
    path.write_text("\n".join(lines) + "\n")
    assert main(_train_args(path, tmp_path / "run")) == 0
    out = capsys.readouterr().out
    assert "skipped 1 blank line(s)" in out
    assert "1 example(s) have an empty text" in out


def test_long_texts_are_truncated_with_one_warning(tmp_path, capsys):
    rows = [(" ".join([text] * 6), label) for text, label in make_texts(60, seed=6)]
    train = write_csv(tmp_path / "long.csv", rows)
    assert main(_train_args(train, tmp_path / "run")) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "longer than max_len=32" in warnings[0]


def test_directory_that_is_not_a_run(tmp_path, capsys):
    _fails(["predict", str(tmp_path), "some text"], capsys, "not a run directory")
    _fails(["evaluate", str(tmp_path / "missing"), "--data", "x.csv"], capsys, "no such run directory")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint(trained_run, tmp_path, capsys, damage):
    run, _ = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 64)
    _fails(["predict", str(copy), "goal"], capsys, "corrupt or truncated")


def test_refuses_to_overwrite_a_run(trained_run, news_files, capsys):
    run, _ = trained_run
    train, _ = news_files
    _fails(_train_args(train, run), capsys, "already holds a run")


def test_unknown_preset_key(news_files, tmp_path, capsys):
    train, _ = news_files
    preset = tmp_path / "preset.yaml"
    preset.write_text("d_modle: 64\n")
    _fails(_train_args(train, tmp_path / "run", "--config", str(preset)), capsys, "d_modle")


def test_average_last_keeps_the_better_of_average_and_best(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", make_texts(120, seed=5))
    run = tmp_path / "run"
    args = ["train", "classify", "--train", str(train), "--out", str(run), "--epochs", "4", *TINY_MODEL]
    assert main([*args, "--average-last", "3"]) == 0
    assert_average_or_best(run, 3, capsys.readouterr().out)
    _fails([*args, "--out", str(tmp_path / "bad"), "--average-last", "0"], capsys, "--average-last must be at least 1")


def test_label_smoothing_reaches_the_loss(tmp_path, capsys):
    from attnkit.tasks.classify import ClassifyTask

    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 3, 1, 1, 2])
    model = lambda ids: logits  # noqa: E731 - stands in for a classifier
    loss, count = ClassifyTask(0.2).loss(model, {"ids": torch.ones(5, 3, dtype=torch.long), "label": labels})
    log_p = logits.log_softmax(-1)
    expected = (0.8 * -log_p[torch.arange(5), labels] + 0.2 * -log_p.mean(-1)).mean()
    assert torch.allclose(loss, expected) and count == 15

    train = write_csv(tmp_path / "train.csv", make_texts(60, seed=6))
    run = tmp_path / "run"
    assert main(_train_args(train, run, "--label-smoothing", "0.2")) == 0
    assert json.loads((run / "config.json").read_text())["options"]["label_smoothing"] == 0.2
    bad = _train_args(train, tmp_path / "bad", "--label-smoothing", "1")
    _fails(bad, capsys, "--label-smoothing must be in [0, 1)")


def test_token_dropout_removes_tokens_only_in_training(tmp_path, capsys):
    from attnkit.models import TextClassifier, TextEncoderConfig

    config = TextEncoderConfig(vocab_size=40, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=12, dropout=0.0)
    torch.manual_seed(0)
    model = TextClassifier(config, 3, head_dropout=0.0, token_dropout=0.5)
    ids = torch.randint(1, 40, (4, 12))
    ids[1, 7:] = 0  # padding stays padding
    model.eval()
    plain = model(ids)
    model.token_dropout = 0.0
    assert torch.equal(model(ids), plain)  # evaluation never drops

    model.train()
    model.token_dropout = 0.5
    torch.manual_seed(3)
    dropped = model(ids)
    torch.manual_seed(3)
    drop = (torch.rand(ids.shape) < 0.5) & (ids != 0)
    drop[:, 0] = False
    assert drop.any()
    model.token_dropout = 0.0
    assert torch.allclose(dropped, model(ids.masked_fill(drop, 0)))  # = those tokens turned to padding
    assert not torch.allclose(dropped, plain)

    model.token_dropout = 0.99  # the first token always survives: outputs stay finite
    assert torch.isfinite(model(torch.randint(1, 40, (8, 12)))).all()
    with pytest.raises(ValueError, match="token_dropout"):
        TextClassifier(config, 3, token_dropout=1.0)

    train = write_csv(tmp_path / "train.csv", make_texts(60, seed=6))
    run = tmp_path / "run"
    assert main(_train_args(train, run, "--token-dropout", "0.1")) == 0
    assert json.loads((run / "config.json").read_text())["options"]["token_dropout"] == 0.1
    _fails(_train_args(train, tmp_path / "bad", "--token-dropout", "1"), capsys, "--token-dropout must be in [0, 1)")


def test_valid_fraction_zero_trains_on_everything_and_keeps_the_average(tmp_path, capsys):
    from safetensors.torch import load_file

    train = write_csv(tmp_path / "train.csv", make_texts(60, seed=7))
    test = write_csv(tmp_path / "test.csv", make_texts(20, seed=8))
    run = tmp_path / "run"
    args = _train_args(train, run, "--test", str(test), "--valid-fraction", "0", "--average-last", "2", "--epochs", "3")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "data: 60 train / 0 validation / 20 test examples" in out
    assert "the average of the last 2 checkpoints" in out
    kept = sorted((run / "checkpoints").glob("step-*.safetensors"))[-2:]
    first, second = load_file(kept[0]), load_file(kept[1])
    saved = load_file(run / "model.safetensors")
    for name, value in saved.items():  # model.safetensors = the mean of the last two epochs' weights
        assert torch.allclose(value, (first[name] + second[name]) / 2, atol=1e-6), name
    assert json.loads((run / "metrics.json").read_text())["accuracy"] >= 0

    alone = tmp_path / "alone"  # no validation and no test: trains, then says there is nothing to evaluate
    assert main(_train_args(train, alone, "--valid-fraction", "0")) == 0
    assert "nothing to evaluate" in capsys.readouterr().out
    assert (alone / "model.safetensors").exists()
    _fails(_train_args(train, tmp_path / "bad", "--valid-fraction", "1"), capsys, "--valid-fraction must be in [0, 1)")
