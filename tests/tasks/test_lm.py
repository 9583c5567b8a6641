"""`attnkit train lm` and `attnkit generate` end to end on a small repetitive text; bad input."""

from __future__ import annotations

import json

import pytest
import torch

from attnkit.cli import main

TINY = ["--max-len", "32", "--d-model", "32", "--n-heads", "4", "--n-layers", "2", "--batch-size", "16"]
VERSE = "to be or not to be, that is the question.\n"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    text = root / "text.txt"
    text.write_text(VERSE * 120, encoding="utf-8")
    run = root / "run"
    args = ["train", "lm", "--text", str(text), "--out", str(run), "--max-steps", "150", "--eval-every", "75"]
    assert main([*args, *TINY, "--lr", "3e-3", "--warmup-steps", "10", "--no-progress"]) == 0
    return root, run


def test_learns_the_text_and_writes_a_run(trained):
    _, run = trained
    for name in (
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "metrics.json",
        "history.csv",
        "last/state.json",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"val_loss", "val_ppl"}
    assert metrics["val_loss"] < 0.5  # a 44-character verse repeated: nearly deterministic once learned


def test_greedy_generation_continues_the_verse(trained, capsys):
    _, run = trained
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "to be or ", "--temperature", "0", "--max-new-tokens", "30"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("to be or not to be, that is the")


def test_compiled_generation_gives_the_same_text(trained, capsys):
    _, run = trained
    args = ["generate", str(run), "--prompt", "to be or ", "--max-new-tokens", "20", "--seed", "1", "--samples", "2"]
    capsys.readouterr()
    assert main(args) == 0
    eager = capsys.readouterr().out
    assert main([*args, "--compile"]) == 0
    assert capsys.readouterr().out == eager


def test_compile_without_a_cpp_compiler_or_without_the_cache_is_a_clear_error(trained, capsys):
    from torch._inductor import config

    from attnkit.errors import UserError
    from attnkit.runs import open_run

    _, run = trained
    with pytest.raises(UserError, match="use_cache"):
        open_run(run).generate("to", max_new_tokens=2, use_cache=False, compile=True)
    with config.patch({"cpp.cxx": ("attnkit-no-such-compiler",)}):
        message = _error(capsys, ["generate", str(run), "--prompt", "to", "--max-new-tokens", "2", "--compile"])
    assert "C++ compiler" in message and "leave out --compile" in message


def test_sampling_is_seeded_and_slides_past_the_context(trained, capsys):
    _, run = trained
    args = ["generate", str(run), "--prompt", "t", "--max-new-tokens", "100", "--top-k", "5", "--top-p", "0.9"]
    capsys.readouterr()
    assert main([*args, "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--seed", "3"]) == 0
    assert capsys.readouterr().out == first
    assert len(first.rstrip("\n")) >= 101 - 1  # 100 new characters beyond a 32-token context


def _error(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_input(trained, tmp_path, capsys):
    _, run = trained
    assert "not in the model's vocabulary" in _error(capsys, ["generate", str(run), "--prompt", "ROMEO: ☃"])
    assert "--max-new-tokens" in _error(capsys, ["generate", str(run), "--max-new-tokens", "0"])
    assert "--top-p" in _error(capsys, ["generate", str(run), "--top-p", "1.5"])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "empty" in _error(capsys, ["train", "lm", "--text", str(empty), "--out", str(tmp_path / "r")])
    short = tmp_path / "short.txt"
    short.write_text("tiny text\n")
    assert "fewer than a window" in _error(capsys, ["train", "lm", "--text", str(short), *TINY])
    assert "--text" in _error(capsys, ["train", "lm"])


def test_byte_level_bpe_runs(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("Ünïcode and plain words, again and again.\n" * 80, encoding="utf-8")
    run = tmp_path / "run"
    args = ["train", "lm", "--text", str(text), "--tokenizer", "bytebpe", "--vocab-size", "300", "--out", str(run)]
    assert main([*args, *TINY, "--max-steps", "20", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "日本 ☃", "--max-new-tokens", "10"]) == 0  # any text encodes
