"""The one run interface: `open_run` checks a run directory, every run's `encode`/`forward` agree with
its `predict`, and the command line shows each run's own flags. Works on copies of the release's
fixture runs (tests/fixtures/runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from attnkit.cli import main
from attnkit.data.tokenizer import MASK_ID
from attnkit.errors import UserError
from attnkit.runs import open_run
from attnkit.tasks.translate import EOS_ID

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "tests" / "fixtures" / "runs"
IMAGES = "tests/fixtures/runs/data/vision/test"


def _edit_config(run: Path, change) -> None:
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))


# ------------------------------------------------------------------------- open_run checks the directory


def test_unknown_option_in_config_is_an_error_naming_it(copy_run):
    run = copy_run("classify")
    _edit_config(run, lambda c: c["options"].update(colour="blue"))
    with pytest.raises(UserError, match=r"config.json: unknown option\(s\) 'colour'"):
        open_run(run)


def test_option_missing_in_an_older_run_takes_its_recorded_value(copy_run):
    """SASRec runs saved before `style` existed were the attnkit style (RecommendOptions.SAVED_WITHOUT)."""
    run = copy_run("recommend")
    _edit_config(run, lambda c: c["options"].pop("style"))
    assert open_run(run).options.style == "attnkit"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(task="poetry"), "unknown task 'poetry'"),
        (lambda c: c.pop("model"), "missing or malformed 'model'"),
        (lambda c: c.update(options=[1, 2]), "missing or malformed 'options'"),
        (lambda c: c["model"].update(d_model="wide"), "bad 'model'|model"),
    ],
)
def test_damaged_config_is_a_user_error(copy_run, change, message):
    run = copy_run("classify")
    _edit_config(run, change)
    with pytest.raises(UserError, match=message):
        open_run(run)


def test_devices_are_checked(copy_run):
    run = copy_run("lm")
    with pytest.raises(UserError, match="--device must be auto, cpu, cuda or cuda:N"):
        open_run(run, device="tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device is available"):
            open_run(run, device="cuda")


def test_vision_run_without_normalisation_names_the_field(copy_run):
    run = copy_run("vision")
    _edit_config(run, lambda c: c.pop("normalize"))
    with pytest.raises(UserError, match="'normalize'"):
        open_run(run)


# ------------------------------------------------------------------------- encode / forward agree with predict


def test_classifier_forward_gives_predict_probabilities(copy_run):
    run = open_run(copy_run("classify"))
    texts = ["goal match team striker cup", "stock market shares bank", "cup"]
    probs = run.forward(run.encode(texts)).float().softmax(dim=-1)  # (B, C)
    for row, ranked in zip(probs, run.predict(texts, top_k=2), strict=True):
        top = row.topk(2)
        assert [label for label, _ in ranked] == [run.classes[int(i)] for i in top.indices]
        assert [p for _, p in ranked] == pytest.approx(top.values.tolist(), abs=1e-6)


def test_classifier_batches_by_length_and_answers_in_the_texts_order(copy_run):
    # Batches are formed from texts sorted by length (less padding); each text's row must still be
    # its own, equal to the text predicted alone.
    run = open_run(copy_run("classify"))
    words = "goal match team striker cup stock market shares bank rates".split()
    texts = [" ".join(words[: 1 + (7 * i) % len(words)]) for i in range(11)]  # lengths out of order
    together = run.probabilities(texts, batch_size=4)
    alone = torch.cat([run.probabilities([text]) for text in texts])
    assert torch.allclose(together, alone, atol=1e-6)


def test_vision_forward_gives_predict_probabilities(copy_run):
    run = open_run(copy_run("vision"))
    images = [f"{IMAGES}/vertical/0.png", f"{IMAGES}/horizontal/1.png"]
    probs = run.forward(run.encode(images)).float().softmax(dim=-1)
    assert run.encode(images)["images"].shape[0] == 2
    for row, ranked in zip(probs, run.predict(images, top_k=1), strict=True):
        assert ranked[0][0] == run.classes[int(row.argmax())]
        assert ranked[0][1] == pytest.approx(float(row.max()), abs=1e-6)


def _rows_per_forward(run, monkeypatch, key: str) -> list[int]:
    """Record the batch size (rows of `batch[key]`) of each call of `run.forward` from now on."""
    rows: list[int] = []
    forward = run.forward
    monkeypatch.setattr(run, "forward", lambda batch: rows.append(batch[key].size(0)) or forward(batch))
    return rows


def test_vision_predicts_many_images_in_bounded_batches_in_order(copy_run, monkeypatch):
    run = open_run(copy_run("vision"))
    images = [f"{IMAGES}/{kind}/{i}.png" for i in range(2) for kind in ("vertical", "horizontal")] * 2  # 8
    alone = [run.predict([image], top_k=2)[0] for image in images]
    rows = _rows_per_forward(run, monkeypatch, "images")
    together = run.predict(images, top_k=2, batch_size=3)
    assert rows == [3, 3, 2]
    for ranked, wanted in zip(together, alone, strict=True):
        assert [c for c, _ in ranked] == [c for c, _ in wanted]
        assert [p for _, p in ranked] == pytest.approx([p for _, p in wanted], abs=1e-6)


def test_recommender_forward_scores_rank_predict_items(copy_run):
    run = open_run(copy_run("recommend"))
    history = ["50", "51", "52"]
    internal = run.parse_history(",".join(history))
    scores = run.forward(run.encode([internal]))[0]  # (V + 1,)
    scores[0] = float("-inf")
    scores[internal] = float("-inf")
    best = scores.topk(3).indices.tolist()
    predicted = run.predict([history], top_k=3)[0]
    assert [item for item, _ in predicted] == [run.data.items[i] for i in best]
    assert not {item for item, _ in predicted} & set(history)


def test_recommender_answers_many_histories_in_batches_as_each_alone(copy_run, monkeypatch):
    # Histories of different lengths share a batch (left-padded to the longest); every answer must
    # equal the history's own, and a served batch must be one model call, not one per history.
    run = open_run(copy_run("recommend"))
    items = run.data.items[1:]
    texts = [",".join(items[i : i + 1 + (5 * i) % 9]) for i in range(7)]
    alone = [run.records([text], top_k=4)[0] for text in texts]
    calls = _rows_per_forward(run, monkeypatch, "ids")
    together = run.records(texts, top_k=4)
    assert calls == [7]
    for got, want in zip(together, alone, strict=True):
        assert [r["item"] for r in got["items"]] == [r["item"] for r in want["items"]]
        assert [r["score"] for r in got["items"]] == pytest.approx([r["score"] for r in want["items"]], abs=1e-4)


def test_translator_forward_reproduces_its_greedy_translation(copy_run):
    """Teacher-forced on its own greedy output, the decoder's argmax at each position is the next token:
    the full forward pass and the cached search agree."""
    run = open_run(copy_run("translate"))
    batch = run.encode(["Drei vier.", "Eins zwei acht."])
    logits = run.forward(batch)  # (B, T, V)
    for row in range(2):
        target = [t for t in batch["tgt_in"][row, 1:].tolist() if t != 0]
        predicted = logits[row].argmax(dim=-1).tolist()
        assert predicted[: len(target)] == target
        assert predicted[len(target)] == EOS_ID
    assert run.predict(["Drei vier."], search="greedy") == run.translate(["Drei vier."], search="greedy")


def test_language_model_forward_gives_the_first_greedy_token(copy_run):
    run = open_run(copy_run("lm"))
    prompt = "to be or "
    logits = run.forward(run.encode([prompt]))  # (1, T, V)
    first = run.codec.decode([int(logits[0, -1].argmax())])
    assert run.predict([prompt], max_new_tokens=1)[0] == first


def test_masked_lm_predict_fills_masks_from_forward(copy_run):
    run = open_run(copy_run("mlm"))
    text = "the [MASK] won the match"
    batch = run.encode([text])
    masks = (batch["ids"][0] == MASK_ID).nonzero().flatten().tolist()
    assert len(masks) == 1
    probs = run.forward(batch)[0, masks[0]].float().softmax(dim=-1)
    (filled,) = run.predict([text], top_k=3)[0]
    assert [token for token, _ in filled] == [run.tokenizer.id_to_token(int(i)) for i in probs.topk(3).indices]


def test_masked_lm_predicts_a_long_input_list_in_bounded_batches_in_order(copy_run, monkeypatch):
    # All inputs in one batch made (B, L, V) logits for the whole file: a few thousand lines were
    # gigabytes. Batches are bounded; each text's fills are those it gets alone.
    run = open_run(copy_run("mlm"))
    words = "the team won match cup goal striker".split()
    texts = [" ".join([*words[: 1 + i % 6], "[MASK]", *words[: i % 4]]) for i in range(9)] + ["no mask here"]
    alone = [run.predict([text], top_k=2)[0] for text in texts]
    rows = _rows_per_forward(run, monkeypatch, "ids")
    together = run.predict(texts, top_k=2, batch_size=4)
    assert rows == [4, 4, 2]
    assert [[[t for t, _ in m] for m in fills] for fills in together] == [[[t for t, _ in m] for m in f] for f in alone]
    for fills, expected in zip(together, alone, strict=True):
        for mask, wanted in zip(fills, expected, strict=True):
            assert [p for _, p in mask] == pytest.approx([p for _, p in wanted], abs=1e-5)


# ------------------------------------------------------------------------- the command line


def _help(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_predict_help_shows_the_runs_own_flags(copy_run, capsys):
    classify = _help(["predict", str(copy_run("classify"))], capsys)
    assert "--top-k" in classify and "--output" in classify
    assert "--beam" not in classify and "--history" not in classify
    translate = _help(["predict", str(copy_run("translate"))], capsys)
    assert "--beam" in translate and "--alpha" in translate
    assert "--history" not in translate and "--protocol" not in translate
    generic = _help(["predict"], capsys)
    assert "RUN_DIR --help" in generic and "classify:" in generic and "translate:" in generic


def test_a_command_the_task_lacks_is_refused(copy_run, capsys):
    assert main(["generate", str(copy_run("classify"))]) == 2
    assert "`attnkit generate` does not apply to classify runs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # not a recommend flag: argparse refuses it
        main(["predict", str(copy_run("recommend")), "--beam", "2"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --beam" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["lm", "mlm"])
def test_evaluate_reproduces_the_validation_figures_of_training(task, copy_run, capsys):
    """`evaluate` rebuilds the held-out split (and, for mlm, its fixed masks) as training did, so it gives
    the validation metrics training recorded for the kept checkpoint."""
    run = copy_run(task)
    trained = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics == pytest.approx(trained, rel=1e-5)
    assert json.loads((run / "metrics.json").read_text()) == pytest.approx(metrics)


def test_translate_predict_writes_json_lines_and_csv(copy_run, tmp_path, capsys):
    run = copy_run("translate")
    sentences = ["Drei vier.", "Eins zwei acht."]
    assert main(["predict", str(run), *sentences, "--beam", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert main(["predict", str(run), *sentences, "--beam", "1", "--output", str(tmp_path / "out.jsonl")]) == 0
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert records == [{"source": s, "translation": t} for s, t in zip(sentences, printed, strict=True)]
    assert main(["predict", str(run), *sentences, "--beam", "1", "--output", str(tmp_path / "out.csv")]) == 0
    import csv

    rows = list(csv.reader((tmp_path / "out.csv").read_text().splitlines()))
    assert rows == [["source", "translation"], *([s, t] for s, t in zip(sentences, printed, strict=True))]
    assert main(["predict", str(run), *sentences, "--beam", "1", "--output", str(tmp_path / "out.en")]) == 0
    assert (tmp_path / "out.en").read_text().splitlines() == printed


# ------------------------------------------------------------------------- damaged run directories


def _damage_json(name: str, change):
    def damage(run: Path) -> None:
        data = json.loads((run / name).read_text())
        change(data)
        (run / name).write_text(json.dumps(data))

    return damage


def _stopped_before_its_first_evaluation(run):
    (run / "model.safetensors").unlink()
    (run / "last").mkdir(exist_ok=True)
    (run / "last" / "state.json").write_text("{}")


DAMAGED = [
    ("classify", _stopped_before_its_first_evaluation, "no model.safetensors yet: it is written at the run's first"),
    ("classify", _damage_json("config.json", lambda c: c.update(colour=1)), "config.json: unknown key(s) 'colour'"),
    ("classify", _damage_json("config.json", lambda c: c.update(classes=5)), "'classes' must be a list of class names"),
    ("classify", _damage_json("config.json", lambda c: c.pop("classes")), "config.json: missing 'classes'"),
    ("classify", _damage_json("config.json", lambda c: c["options"].update(max_len="256")), "max-len must be a whole"),
    (
        "translate",
        _damage_json("config.json", lambda c: c["options"].update(beam="four")),
        "beam must be a whole number",
    ),
    ("translate", _damage_json("config.json", lambda c: c.pop("options")), "missing or malformed 'options'"),
    ("vision", _damage_json("config.json", lambda c: c.pop("normalize")), "config.json: missing 'normalize'"),
    ("recommend", _damage_json("ids.json", lambda c: c.pop("users")), "ids.json: missing or malformed 'users'"),
    ("recommend", lambda run: (run / "interactions.safetensors").write_bytes(b"\x00" * 40), "interactions.safetensors"),
    ("recommend", lambda run: (run / "ids.json").write_text("{"), "ids.json: cannot read"),
    ("lm", lambda run: (run / "model.safetensors").write_bytes(b"junk"), "model.safetensors"),
    ("lm", lambda run: (run / "config.json").write_text("[]"), "not an attnkit run configuration"),
]


@pytest.mark.parametrize(("task", "damage", "message"), DAMAGED, ids=[f"{t}-{m[:30]}" for t, _, m in DAMAGED])
def test_a_damaged_run_directory_is_one_clear_line(task, damage, message, copy_run, capsys):
    run = copy_run(task)
    damage(run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UserError, match=re.escape(message)):
        open_run(run)
    command = {"lm": ["generate", str(run)], "recommend": ["predict", str(run), "--history", "50"]}.get(
        task, ["evaluate", str(run)]
    )
    assert main(command) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing changed


BAD_COMMANDS = [  # (task, the command with RUN for the run directory, the start of the one error line)
    ("lm", ["generate", "RUN", "--temperature", "nan"], "--temperature must be a finite number >= 0, got nan"),
    ("lm", ["generate", "RUN", "--temperature", "-1"], "--temperature must be a finite number >= 0, got -1.0"),
    ("lm", ["generate", "RUN", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    ("lm", ["generate", "RUN", "--top-k", "0"], "--top-k must be at least 1, got 0"),
    ("lm", ["generate", "RUN", "--top-p", "nan"], "--top-p must be in (0, 1], got nan"),
    ("classify", ["predict", "RUN", "hello", "--top-k", "0"], "--top-k must be at least 1"),
    ("translate", ["predict", "RUN", "Hallo", "--beam", "0"], "--beam must be at least 1"),
    ("translate", ["predict", "RUN", "Hallo", "--alpha", "nan"], "--alpha must be a finite number >= 0, got nan"),
    ("classify", ["explain", "RUN", "hello", "--layer", "99"], "--layer 99: the model has layers 0..0"),
    ("classify", ["explain", "RUN", "hello", "--head", "99"], "--head 99: the model has heads 0..1"),
    ("recommend", ["predict", "RUN", "--history", "1,2", "--top-k", "-1"], "--top-k must be at least 1"),
    ("vision", ["predict", "RUN", "nothere.png"], "nothere.png: no such file"),
    ("translate", ["evaluate", "RUN", "--src", "nothere.de", "--ref", "x"], "nothere.de: no such file"),
]


@pytest.mark.parametrize(
    ("task", "command", "message"), BAD_COMMANDS, ids=[f"{t}-{' '.join(c[2:])}" for t, c, _ in BAD_COMMANDS]
)
def test_a_bad_command_argument_is_one_clear_line(task, command, message, copy_run, capsys):
    run = copy_run(task)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main([str(run) if part == "RUN" else part for part in command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing changed


@pytest.mark.parametrize("target", ["folder", "file-under-a-file"])
def test_an_output_that_cannot_be_written_is_one_line(target, copy_run, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    output = tmp_path if target == "folder" else blocker / "out.jsonl"
    args = ["predict", str(copy_run("classify")), "some text", "--output", str(output)]
    if target == "folder":
        args[-1] = str(tmp_path / "dir.jsonl")
        (tmp_path / "dir.jsonl").mkdir()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output ") and err.count("\n") == 1


def test_download_into_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["data", "download", "reuters21578", "--data-dir", str(target)]) == 2
    assert capsys.readouterr().err == f"error: --data-dir {target}: is a file, not a folder\n"


def test_predictions_that_deserve_doubt_say_so(copy_run, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    long = " ".join(["goal"] * 300)
    assert main(["predict", str(copy_run("classify")), "", "☃☃☃ ☃☃", long, "goal match", "--output", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["warning"].startswith("no token after tokenization")
    assert records[1]["warning"] == "2 of 2 tokens are unknown to the tokenizer"
    assert records[2]["warning"].startswith("cut to ")
    assert "warning" not in records[3]
    err = capsys.readouterr().err
    assert err.count("warning: text ") == 3 and "warning: text 4" not in err
