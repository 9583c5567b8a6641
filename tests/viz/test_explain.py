"""`attnkit explain` and `attnkit.viz.explain` on the release's fixture run of every task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnkit.cli import main
from attnkit.runs import open_run
from attnkit.viz import capture_attention
from attnkit.viz.explain import explain

ROOT = Path(__file__).resolve().parent.parent.parent
RUNS = ROOT / "tests" / "fixtures" / "runs"
IMAGE = "tests/fixtures/runs/data/vision/test/vertical/0.png"
INPUTS = {
    "classify": ["goal match team striker cup"],
    "mlm": ["the [MASK] won the match"],
    "translate": ["Drei vier."],
    "lm": ["to be or ", "--max-new-tokens", "4"],
    "vision": [IMAGE],
    "recommend": ["--history", "50,51,52"],
}


@pytest.mark.parametrize("task", list(INPUTS))
def test_explain_writes_pictures_and_json_for_every_task(task, copy_run, tmp_path, capsys):
    run_dir = copy_run(task)
    out = tmp_path / "out"
    assert main(["explain", str(run_dir), *INPUTS[task], "--out", str(out)]) == 0
    data = json.loads((out / "attention.json").read_text())
    assert data["task"] == task and data["fidelity"] < 1e-4
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert {f"{m['module']}.png" for m in data["maps"]} <= set(pictures)
    run = open_run(run_dir)
    for record in data["maps"]:
        weights = torch.tensor(record["weights"])  # (H, T, S)
        sums = weights.sum(dim=-1)
        assert torch.all(((sums - 1).abs() < 1e-4) | (sums == 0))
        assert weights.size(0) == next(m for n, m in run.model.named_modules() if n == record["module"]).n_heads
    if task in ("classify", "vision"):
        assert "saliency.png" in pictures and data["saliency_method"].startswith("gradient-weighted")
        count = data["grid"][0] * data["grid"][1] if task == "vision" else len(data["tokens"])
        assert len(data["saliency"]) == count
    if task == "translate":
        assert "alignment.png" in pictures
        cross = next(m for m in data["maps"] if m["kind"] == "cross")
        assert len(cross["weights"][0]) == len(data["target_tokens"])
        assert len(cross["weights"][0][0]) == len(data["source_tokens"])
    assert "fidelity" in capsys.readouterr().out


def test_explained_maps_are_the_captured_maps_and_the_prediction_is_predicts(copy_run):
    run = open_run(copy_run("classify"))
    text = "stock market shares bank"
    explanation = explain(run, text)
    with capture_attention(run.model) as captured:
        run.forward(run.encode([text]))
    for view in explanation.maps:
        torch.testing.assert_close(view.weights, captured[view.module].weights[0])
    (label, probability), *_ = run.predict([text])[0]
    assert explanation.prediction == {"label": label, "probability": pytest.approx(probability, abs=1e-6)}
    one = explanation.to_json(layer=0, head=1)
    assert [m["module"] for m in one["maps"]] == ["body.encoder.layers.0.self_attn"]
    assert len(one["maps"][0]["weights"]) == 1


def test_translation_explanation_rows_are_the_produced_tokens(copy_run):
    run = open_run(copy_run("translate"))
    explanation = explain(run, "Drei vier.")
    assert explanation.prediction == run.translate(["Drei vier."], search="greedy")[0]
    assert explanation.target_tokens[-1] == "</s>"
    assert "".join(explanation.target_tokens[:-1]).strip() == explanation.prediction


@pytest.mark.parametrize(
    ("task", "args", "message"),
    [
        ("classify", ["text", "--layer", "7"], "--layer 7: the model has layers 0..0"),
        ("classify", ["text", "--head", "5"], "--head 5: the model has heads 0..1"),
        ("classify", ["   "], "the input is empty"),
        ("classify", ["text", "--format", "png,svg"], "--format png,svg: choose from png, json, html"),
        ("recommend", ["--user", "999"], "user '999' is not in this run's data"),
        ("recommend", [], "give either --user ID or --history ITEMS"),
        ("vision", ["/nonexistent.png"], "nonexistent.png"),
        ("vision", [], "give image files (or test-set indices) to explain"),
        ("vision", ["999"], "test-set index 999 is out of range: the test split has"),
    ],
)
def test_bad_explain_input_is_one_line_and_exit_2(task, args, message, copy_run, tmp_path, capsys):
    assert main(["explain", str(copy_run(task)), *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_vision_test_set_index_explains_that_image(copy_run, tmp_path, capsys):
    """`explain RUN 0`: the run's own test image 0, written beside the maps, explained as its file is."""
    from attnkit.tasks.vision import read_splits

    run_dir = copy_run("vision")
    assert main(["explain", str(run_dir), "0", "--out", str(tmp_path / "out"), "--format", "json"]) == 0
    run = open_run(run_dir)
    test = read_splits(run.options)[1]
    (written,) = (tmp_path / "out").glob("test-0-*.png")
    assert written.name == f"test-0-{test.classes[int(test.labels[0])]}.png"
    assert torch.equal(run.encode([str(written)])["images"][0], run.pipeline(test.images[:1], train=False)[0])
    label = json.loads((tmp_path / "out" / "attention.json").read_text())["prediction"]["label"]
    assert label == run.predict([str(written)])[0][0][0]
