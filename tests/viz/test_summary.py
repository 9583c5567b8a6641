"""Dataset-level attention summaries: the accumulated statistics by hand, and `explain --summary` on the
release's fixture run of every task."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnkit.cli import main
from attnkit.viz.summary import Accumulator


def test_accumulated_statistics_by_hand():
    # One input, one head, 3 positions; the last key is padding and the last query too.
    weights = torch.tensor([[[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]]])
    real = torch.tensor([[True, True, False]])
    acc = Accumulator(heads=1, reach=2)
    acc.add(weights, real, real, self_attention=True)
    result = acc.result()
    assert result["queries"] == 2  # the padded query does not count
    assert result["entropy"] == pytest.approx([math.log(2) / 2])  # (log 2 + 0) / 2
    assert result["mass_on_first"] == pytest.approx([(0.5 + 1.0) / 2])
    assert result["mass_on_padding"] == pytest.approx([0.0])
    # offsets j - i: query 0 puts 0.5 at 0 and 0.5 at +1; query 1 puts 1.0 at -1.
    assert result["by_offset"]["offsets"] == [-2, -1, 0, 1, 2]
    assert result["by_offset"]["mean"][0] == pytest.approx([0.0, 0.5, 0.25, 0.25, 0.0])


def test_recency_and_distance_by_hand():
    acc = Accumulator(heads=1, reach=3)
    last = torch.tensor([[[0.0, 0.25, 0.75]]])  # (B, H, S): left-padded history, most recent last
    acc.add_recency(last, torch.tensor([[False, True, True]]))
    assert acc.result()["by_recency"][0] == pytest.approx([0.75, 0.25, 0.0])
    centres = torch.tensor([[0.0, 0.0], [0.0, 4.0]])  # two patches 4 pixels apart
    weights = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # (B, H, P, P), no class token
    acc.add_distance(weights, centres, first=0)
    assert acc.result(patches_per_input=2, inputs=1)["mean_distance_px"] == pytest.approx([(0.5 * 4 + 1.0 * 4) / 2])


@pytest.mark.parametrize("task", ["classify", "mlm", "recommend", "translate", "lm", "vision"])
def test_explain_summary_on_every_task(task, copy_run, tmp_path, capsys):
    run_dir = copy_run(task)
    out = tmp_path / "summary"
    assert main(["explain", str(run_dir), "--summary", "--limit", "12", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task and 1 <= summary["inputs"] <= 12
    assert (out / "heads.png").is_file()
    for module in summary["modules"]:
        assert all(value == pytest.approx(0.0, abs=1e-6) for value in module["mass_on_padding"])
        assert all(0 <= value <= math.log(64) for value in module["entropy"])
        if "by_offset" in module:
            assert all(0 < sum(row) <= 1 + 1e-6 for row in module["by_offset"]["mean"])
    if task == "recommend":
        assert any("by_recency" in m for m in summary["modules"]) and (out / "by_recency.png").is_file()
    if task == "vision":
        assert all(m["mean_distance_px"][0] > 0 for m in summary["modules"]) and (out / "distance.png").is_file()
    if task == "translate":
        assert {m["kind"] for m in summary["modules"]} == {"self", "causal", "cross"}
    assert "summarised" in capsys.readouterr().out


def test_summary_limit_is_checked(copy_run, capsys):
    assert main(["explain", str(copy_run("classify")), "--summary", "--limit", "0"]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err
