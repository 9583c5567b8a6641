"""Machine translation: token-count batching, the byte-level tokenizer's round trip, the Translator's
teacher-forced states, and `attnkit train translate`, `evaluate` and `predict` end to end on a toy
word-for-word language pair; bad input gets one error line and exit code 2."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from attnkit.cli import main
from attnkit.data.batching import token_bucketed_plan
from attnkit.data.bpe_dropout import BPEDropout
from attnkit.data.parallel import ParallelTexts
from attnkit.data.tokenizer import PAD_ID, decode_text, train_tokenizer
from attnkit.models import Translator
from attnkit.nn import TransformerConfig
from attnkit.runs import open_run
from attnkit.tasks.translate import BOS_ID, EOS_ID, encode_pairs, translate_ids

WORDS = {
    "eins": "one",
    "zwei": "two",
    "drei": "three",
    "vier": "four",
    "fünf": "five",
    "sechs": "six",
    "sieben": "seven",
    "acht": "eight",
}
TINY = [
    "--d-model",
    "64",
    "--n-heads",
    "4",
    "--d-ff",
    "128",
    "--n-encoder-layers",
    "2",
    "--n-decoder-layers",
    "2",
    "--vocab-size",
    "300",
    "--dropout",
    "0.0",
    "--label-smoothing",
    "0.0",
    "--max-tokens",
    "600",
    "--warmup-steps",
    "30",
    "--lr",
    "3e-3",
    "--no-progress",
    "--average-last",
    "2",
]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and far faster than on two busy shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Word-for-word 'German' -> 'English' sentences of 2 to 5 number words, capitalised, with a period."""
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        words = [rng.choice(list(WORDS)) for _ in range(rng.randint(2, 5))]
        src.append(" ".join(words).capitalize() + ".")
        tgt.append(" ".join(WORDS[w] for w in words).capitalize() + ".")
    return src, tgt


def write_lines(path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("translate")
    files = {}
    for name, n, seed in (("train", 600, 1), ("valid", 40, 2), ("test", 40, 3)):
        src, tgt = toy_pairs(n, seed)
        files[name] = (write_lines(root / f"{name}.de", src), write_lines(root / f"{name}.en", tgt))
    run = root / "run"
    args = ["train", "translate", "--out", str(run), "--epochs", "12", *TINY]
    for name in ("train", "valid", "test"):
        args += [f"--{name}-src", files[name][0], f"--{name}-tgt", files[name][1]]
    assert main(args) == 0
    return root, files, run


# ---------------------------------------------------------------------------------------- pieces


def test_token_bucketed_batches_respect_the_budget():
    lengths = [random.Random(i).randint(1, 40) for i in range(500)] + [90]  # one longer than the budget
    plan = token_bucketed_plan(lengths, 80, shuffle=True, seed=3)
    batches = plan(0)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))  # each example once
    for batch in batches:
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 80
    assert plan(0) == batches and plan(1) != batches  # deterministic per epoch, reshuffled across epochs
    ordered = token_bucketed_plan(lengths, 80, shuffle=False)(0)
    assert [lengths[i] for batch in ordered for i in batch] == sorted(lengths)
    with pytest.raises(ValueError, match="max_tokens"):
        token_bucketed_plan(lengths, 0, shuffle=False)


def test_byte_level_tokenizer_round_trips_any_text():
    texts = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee!"] * 20
    tokenizer = train_tokenizer(texts, kind="bytebpe", vocab_size=300)
    for text in [*texts[:2], "Ünbekannte Zeichen: 日本語 ☃ 🙂", "  two  spaces", "UPPER lower"]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert 1 not in ids  # never [UNK]: every byte has a token
        assert decode_text(tokenizer, ids) == text


def test_translator_hidden_is_decode_before_the_output_layer():
    torch.manual_seed(0)
    model = Translator(
        TransformerConfig(src_vocab_size=30, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1),
        bos_id=BOS_ID,
        eos_id=EOS_ID,
    ).eval()
    src = torch.tensor([[5, 6, 7, EOS_ID], [8, 9, EOS_ID, 0]])
    tgt_in = torch.tensor([[BOS_ID, 10, 11], [BOS_ID, 12, 0]])
    torch.testing.assert_close(model.lm_head(model.hidden(src, tgt_in)), model(src, tgt_in))


def test_translate_ids_with_and_without_the_cache_agree(toy):
    _, _, run = toy
    loaded = open_run(run)
    sources = [[*loaded.tokenizer.encode(s, add_special_tokens=False).ids, EOS_ID] for s in toy_pairs(12, 7)[0]]
    for search in ("greedy", "beam"):
        cached = translate_ids(loaded.model, sources, search=search, batch_size=5)
        uncached = translate_ids(loaded.model, sources, search=search, batch_size=5, use_cache=False)
        assert cached == uncached


def _text(tokenizer, row: torch.Tensor) -> str:
    return decode_text(tokenizer, [t for t in row.tolist() if t not in (PAD_ID, BOS_ID, EOS_ID)])


def test_bpe_dropout_batches_segment_afresh_and_repeat_from_the_seed(toy):
    tokenizer = open_run(toy[2]).tokenizer
    src, tgt = toy_pairs(40, 11)
    batches = encode_pairs(tokenizer, ParallelTexts(src, tgt), 64, dropout=BPEDropout(tokenizer, 0.3)).batches(
        400, shuffle=True, seed=0
    )
    indices = batches.plan(0)[0]
    torch.manual_seed(0)
    first = batches.collate(indices)
    torch.manual_seed(0)
    again, other = batches.collate(indices), batches.collate(indices)
    plain = encode_pairs(tokenizer, ParallelTexts(src, tgt), 64).batches(400, shuffle=True, seed=0).collate(indices)
    assert all(torch.equal(first[k], again[k]) for k in first)  # the torch generator (kept by checkpoints) decides
    assert not all(first[k].shape == other[k].shape and torch.equal(first[k], other[k]) for k in first)
    assert first["src"].numel() > plain["src"].numel()  # skipped merges: more, shorter pieces
    for row, i in enumerate(indices):  # each row still holds its own pair, framed as without dropout
        assert _text(tokenizer, first["src"][row]) == src[i]
        assert _text(tokenizer, first["tgt_out"][row]) == tgt[i]
        assert first["tgt_in"][row, 0] == BOS_ID and EOS_ID in first["tgt_out"][row].tolist()
    cut = encode_pairs(tokenizer, ParallelTexts(src, tgt), 5, dropout=BPEDropout(tokenizer, 1.0))
    short = cut.batches(400, shuffle=False, seed=0).collate(indices)
    assert short["src"].shape[1] == 5 and short["tgt_out"].shape[1] == 4  # --max-len holds with dropout too


# ---------------------------------------------------------------------------------------- end to end


def test_training_writes_a_complete_run_that_translates(toy):
    _, _, run = toy
    for name in (
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "metrics.json",
        "history.csv",
        "last/state.json",
    ):
        assert (run / name).is_file(), name
    assert len(list((run / "checkpoints").glob("step-*.safetensors"))) == 2  # kept for averaging
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"bleu", "chrf", "greedy_bleu", "greedy_chrf"}
    # A word-for-word toy language: a working model translates most of the test set exactly.
    assert metrics["greedy_bleu"] > 60 and metrics["bleu"] > 60
    hypotheses = (run / "test.hyp.en").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == 40


def test_predict_from_arguments_file_and_stdin(toy, tmp_path, capsys, monkeypatch):
    _, _, run = toy
    capsys.readouterr()
    assert main(["predict", str(run), "Drei vier.", "", "--beam", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Three four." and lines[1] == ""  # an empty sentence translates to an empty one
    src = write_lines(tmp_path / "in.de", ["Eins zwei.", "Acht sieben drei."])
    assert main(["predict", str(run), "--input", src, "--output", str(tmp_path / "out.en")]) == 0
    assert (tmp_path / "out.en").read_text().splitlines() == ["One two.", "Eight seven three."]
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Sechs sieben.\n"))
    capsys.readouterr()
    assert main(["predict", str(run)]) == 0
    assert capsys.readouterr().out.strip() == "Six seven."


def test_unseen_characters_and_long_sentences(toy, capsys):
    _, _, run = toy
    capsys.readouterr()
    long = " ".join(["eins"] * 400) + "."
    assert main(["predict", str(run), "Zwei ☃ drei 日本.", long, "--beam", "1"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2  # some translation for each, no error
    assert captured.err.count("warning") == 1 and "cut to 128 tokens" in captured.err


def test_evaluate_scores_a_reference_file(toy, tmp_path, capsys):
    _, files, run = toy
    capsys.readouterr()
    assert main(["evaluate", str(run), "--src", files["test"][0], "--ref", files["test"][1], "--beam", "1"]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out.strip().splitlines()[-1])
    assert set(printed) == {"greedy_bleu", "greedy_chrf"}  # --beam 1 is greedy search, and named so
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in out  # the sacreBLEU signature is shown
    assert re.search(r"n-grams [\d.]+/[\d.]+/[\d.]+/[\d.]+, brevity penalty [\d.]+ \([\d,]+ tokens", out)
    references = Path(files["test"][1]).read_text(encoding="utf-8").splitlines()
    ref_tok = write_lines(tmp_path / "ref.tok", [r.lower().replace(".", " .") for r in references])
    assert main(["evaluate", str(run), "--src", files["test"][0], "--ref", files["test"][1], "--ref-tok", ref_tok]) == 0
    out = capsys.readouterr().out
    assert "tokenized BLEU" in out and "tok_bleu" in json.loads(out.strip().splitlines()[-1])
    assert out.count("brevity penalty") == 2  # below sacreBLEU and below tokenized BLEU


def test_alpha_overrides_the_runs_length_penalty(toy, capsys, monkeypatch):
    from attnkit.tasks.translate import decoding as translate_module

    _, files, run = toy
    used = []
    real = translate_module.beam_search
    monkeypatch.setattr(translate_module, "beam_search", lambda *a, **k: used.append(k["alpha"]) or real(*a, **k))
    capsys.readouterr()
    assert main(["predict", str(run), "Eins zwei.", "--alpha", "1.5"]) == 0
    assert main(["predict", str(run), "Eins zwei."]) == 0
    assert used == [1.5, json.loads((run / "config.json").read_text())["options"]["alpha"]]
    assert main(["evaluate", str(run), "--src", files["test"][0], "--ref", files["test"][1], "--alpha", "0"]) == 0
    assert "α 0.0" in capsys.readouterr().out and used[-1] == 0.0


def test_training_with_bpe_dropout_repeats_from_its_seed(toy, tmp_path):
    _, files, _ = toy
    saved = []
    for name in ("a", "b"):
        run = tmp_path / name
        args = ["train", "translate", "--out", str(run), "--max-steps", "6", "--bpe-dropout", "0.2", *TINY]
        args += ["--train-src", files["train"][0], "--train-tgt", files["train"][1]]
        args += ["--valid-src", files["valid"][0], "--valid-tgt", files["valid"][1]]
        assert main(args) == 0
        assert json.loads((run / "config.json").read_text())["options"]["bpe_dropout"] == 0.2
        # Tensors and metadata, not bytes: safetensors writes the tied-weight metadata in set order,
        # which differs between processes.
        with safe_open(str(run / "model.safetensors"), "pt") as f:
            saved.append((load_file(run / "model.safetensors"), f.metadata()))
    (first, meta_a), (second, meta_b) = saved
    assert first.keys() == second.keys() and meta_a == meta_b
    assert all(torch.equal(first[k], second[k]) for k in first)


# ---------------------------------------------------------------------------------------- bad input


def _error(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_mismatched_parallel_files(tmp_path, capsys):
    src = write_lines(tmp_path / "a.de", ["Eins.", "Zwei.", "Drei."])
    tgt = write_lines(tmp_path / "a.en", ["One.", "Two."])
    message = _error(
        capsys, ["train", "translate", "--train-src", src, "--train-tgt", tgt, "--out", str(tmp_path / "r")]
    )
    assert "3 lines" in message and "2 lines" in message
    assert not (tmp_path / "r").exists()


def test_empty_training_file(tmp_path, capsys):
    src = write_lines(tmp_path / "a.de", [])
    tgt = write_lines(tmp_path / "a.en", [])
    assert "empty" in _error(capsys, ["train", "translate", "--train-src", src, "--train-tgt", tgt])


def test_option_errors(tmp_path, capsys):
    src = write_lines(tmp_path / "a.de", ["Eins."])
    assert "--train-tgt" in _error(capsys, ["train", "translate", "--train-src", src])
    tgt = write_lines(tmp_path / "a.en", ["One."])
    base = ["train", "translate", "--train-src", src, "--train-tgt", tgt]
    assert "n_heads" in _error(capsys, [*base, "--d-model", "10", "--n-heads", "3"])
    assert "--alpha must be at least 0" in _error(capsys, [*base, "--alpha", "-0.5"])
    assert "--bpe-dropout must be in [0, 1)" in _error(capsys, [*base, "--bpe-dropout", "1"])
    wordpiece = tmp_path / "wordpiece.json"
    train_tokenizer(["Eins zwei drei.", "One two three."], kind="wordpiece", vocab_size=60).save(str(wordpiece))
    with_wordpiece = [*base, "--valid-src", src, "--valid-tgt", tgt, "--tokenizer-file", str(wordpiece)]
    with_wordpiece += ["--bpe-dropout", "0.1", "--out", str(tmp_path / "w")]
    assert "byte-level BPE" in _error(capsys, with_wordpiece)


def test_evaluate_and_predict_errors(toy, tmp_path, capsys):
    _, files, run = toy
    assert "--src" in _error(capsys, ["evaluate", str(run), "--ref", files["test"][1]])
    short = write_lines(tmp_path / "short.en", ["One."])
    assert "lines" in _error(capsys, ["evaluate", str(run), "--src", files["test"][0], "--ref", short])
    assert "--beam" in _error(capsys, ["predict", str(run), "Eins.", "--beam", "0"])
    assert "--alpha must be a finite number >= 0, got -1.0" in _error(
        capsys, ["predict", str(run), "Eins.", "--alpha", "-1"]
    )


def test_evaluate_defaults_to_the_runs_own_test_split(toy, capsys):
    _, files, run = toy
    capsys.readouterr()
    assert main(["evaluate", str(run), "--beam", "1"]) == 0
    own = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["evaluate", str(run), "--src", files["test"][0], "--ref", files["test"][1], "--beam", "1"]) == 0
    assert own == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
