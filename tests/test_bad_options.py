"""Bad option values, from the command line or a preset, end in one line naming the option, the value and
what is allowed, with exit code 2, before any data is read or any run directory is made. Adding a case
is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnkit.cli import main

DATA = {  # data options that name files which do not exist: a checked option must fail first
    "classify": ["--train", "missing.csv"],
    "mlm": ["--text", "missing.txt"],
    "recommend": ["--data", "missing.txt"],
    "translate": ["--train-src", "missing.de", "--train-tgt", "missing.en"],
    "lm": ["--text", "missing.txt"],
    "vision": ["--dataset", "mnist", "--data-dir", "missing"],
}

CASES = [
    ("classify", ["--lr", "nan"], "--lr must be a finite number, got nan"),
    ("classify", ["--lr", "inf"], "--lr must be a finite number, got inf"),
    ("classify", ["--lr", "-1"], "--lr must be greater than 0, got -1.0"),
    ("classify", ["--beta2", "2"], "--beta2 must be in [0, 1), got 2.0"),
    ("classify", ["--grad-clip", "-1"], "--grad-clip must be at least 0, got -1.0"),
    ("classify", ["--weight-decay", "-1"], "--weight-decay must be at least 0, got -1.0"),
    ("classify", ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    ("classify", ["--epochs", "0"], "--epochs must be at least 1, got 0"),
    ("classify", ["--max-minutes", "0"], "--max-minutes must be greater than 0, got 0.0"),
    ("classify", ["--min-lr-ratio", "1.5"], "--min-lr-ratio must be in [0, 1], got 1.5"),
    ("classify", ["--threads", "0"], "--threads must be at least 1, got 0"),
    ("classify", ["--vocab-size", "0"], "--vocab-size must be at least 16, got 0"),
    ("mlm", ["--patience", "-2"], "--patience must be at least 0, got -2"),
    ("recommend", ["--eval-batch-size", "0"], "--eval-batch-size must be at least 1, got 0"),
    ("recommend", ["--min-count", "-1"], "--min-count must be at least 0, got -1"),
    ("translate", ["--vocab-size", "10"], "--vocab-size must be at least 261, got 10"),
    ("translate", ["--max-tokens", "1"], "--max-tokens must be at least 16, got 1"),
    ("translate", ["--valid-size", "-1"], "--valid-size must be at least 1, got -1"),
    ("translate", ["--alpha", "nan"], "--alpha must be a finite number, got nan"),
    ("lm", ["--steps-per-epoch", "-5"], "--steps-per-epoch must be at least 1, got -5"),
    ("vision", ["--crop-padding", "-3"], "--crop-padding must be at least 0, got -3"),
    ("vision", ["--magnitude", "5"], "--magnitude must be in [0, 1], got 5.0"),
    ("vision", ["--image-size", "2"], "--image-size must be at least 4, got 2"),
    ("classify", ["--metric", "bogus"], "--metric must be one of accuracy, macro_f1, micro_f1, loss for classify"),
    ("translate", ["--metric", "accuracy"], "--metric must be one of loss, ppl for translate, got 'accuracy'"),
    ("classify", ["--device", "tpu9"], "--device must be auto, cpu, cuda or cuda:N, got 'tpu9'"),
    ("classify", ["--valid-fraction", "-0.5"], "--valid-fraction must be in [0, 1), got -0.5"),
    ("classify", ["--d-model", "30", "--n-heads", "4"], "bad model options: n_heads=4 must divide d_model=30"),
    ("classify", ["--n-layers", "0"], "bad model options: n_layers must be >= 1, got 0"),
    ("mlm", ["--dropout", "2"], "bad model options: dropout must be in [0, 1), got 2.0"),
    ("recommend", ["--d-model", "30", "--n-heads", "4"], "bad model options: n_heads=4 must divide d_model=30"),
    ("translate", ["--d-model", "30", "--n-heads", "4"], "bad model options: TransformerConfig: n_heads=4 must"),
    ("lm", ["--n-layers", "0"], "bad model options: n_layers must be >= 1, got 0"),
    ("vision", ["--patch-size", "0"], "bad model options: patch_size must be >= 1, got 0"),
]


@pytest.mark.parametrize(("task", "args", "message"), CASES, ids=[f"{t}{' '.join(a)}" for t, a, _ in CASES])
def test_bad_option_value(task, args, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", task, *DATA[task], *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not out.exists()  # nothing was made


def test_cuda_asked_for_without_cuda(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["train", "classify", *DATA["classify"], "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == "error: --device cuda was asked for but no CUDA device is available\n"


def test_init_from_a_run_of_another_task(tmp_path, capsys, monkeypatch):
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    train = "tests/fixtures/runs/data/classify/train.csv"
    args = ["train", "classify", "--train", train, "--init", "tests/fixtures/runs/lm", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert "is a lm run; start from an mlm or classify run" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


PRESET_CASES = [
    ("patience: ten\n", "--patience must be a whole number, got 'ten'"),
    ("lr: 1e-3\n", "--lr must be a number, got '1e-3'"),  # YAML 1.1 reads 1e-3 (no dot) as text
    ("bf16: maybe\n", "--bf16 must be true or false, got 'maybe'"),
    ("schedule: wavy\n", "--schedule must be one of cosine, linear, inverse_sqrt, constant, got 'wavy'"),
    ("dropout: 2\n", "dropout must be in [0, 1)"),
]


@pytest.mark.parametrize(("preset", "message"), PRESET_CASES)
def test_bad_preset_value(preset, message, tmp_path, capsys):
    path = tmp_path / "preset.yaml"
    path.write_text(preset)
    out = tmp_path / "run"
    assert main(["train", "classify", *DATA["classify"], "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_too_little_training_data_names_the_split_and_the_directory_can_be_reused(tmp_path, capsys):
    """One short document: the held-out share takes it, nothing is left to train on. The run directory
    that start made holds no weights, so the next start may use it."""
    text = tmp_path / "one.txt"
    text.write_text("a b c\n")
    out = tmp_path / "run"
    args = ["train", "mlm", "--text", str(text), "--vocab-size", "16", "--d-model", "8", "--n-heads", "2"]
    args += ["--n-layers", "1", "--d-ff", "8", "--max-len", "16", "--out", str(out), "--no-progress"]
    assert main(args) == 2
    assert "the training data has 0 example(s)" in capsys.readouterr().err
    assert (out / "config.json").exists() and not (out / "model.safetensors").exists()
    text.write_text("".join(f"document {i} has a few words in it\n" for i in range(20)))
    assert main([*args, "--max-steps", "1", "--valid-fraction", "0.2"]) == 0  # the same --out, reused
    assert (out / "model.safetensors").exists()


def test_mlm_valid_fraction_must_leave_training_data(tmp_path, capsys):
    assert main(["train", "mlm", *DATA["mlm"], "--valid-fraction", "1", "--out", str(tmp_path / "r")]) == 2
    assert "--valid-fraction must be in (0, 1), got 1.0" in capsys.readouterr().err


def test_patch_size_that_does_not_divide_the_images(tmp_path, capsys, monkeypatch):
    """The image side is known only once the images are read: still one line, and no run is left."""
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    out = tmp_path / "run"
    args = ["train", "vision", "--dataset", "folder", "--data-dir", "tests/fixtures/runs/data/vision"]
    assert main([*args, "--patch-size", "3", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (
        err == "error: --patch-size 3 does not divide the 8-pixel images; use one of its divisors (2, 4),"
        " or resize the images with --image-size\n"
    )
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("lm", "give --text FILE"),
        ("classify", "give --train FILE or --dataset NAME"),
        ("mlm", "give either --text FILE or --dataset NAME"),
    ],
)
def test_training_without_data_is_refused_before_anything_is_made(task, message, tmp_path, capsys):
    """A saved run's options may lack data (an imported run); a new training run may not."""
    assert main(["train", task, "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "run").exists()
