"""`attnkit serve --backend onnx`: the forward pass (translate and lm: the search or sampling over the
generation graphs) in onnxruntime on an export of the run, answers with the same fields and values (to
float tolerance) as the PyTorch backend; exports and precisions it cannot serve refused."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from attnkit.cli import main
from attnkit.errors import UserError
from attnkit.runs import open_run

pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime (extra: onnx)")
pytest.importorskip("onnxscript", reason="torch's dynamo ONNX exporter needs onnxscript (extra: onnx)")
pytest.importorskip("fastapi", reason="serving needs fastapi (extra: serve)")

from fastapi.testclient import TestClient

from attnkit.export.runtime import use_onnx
from attnkit.serve.app import build_app

IMAGE = "tests/fixtures/runs/data/vision/test/vertical/0.png"


def _inputs(task: str, run) -> tuple[list[str], dict]:
    if task == "classify":
        return ["oil prices rose", "the striker scored twice", "shares fell"], {"top_k": 2}
    if task == "mlm":
        return ["oil [MASK] rose", "the [MASK] scored [MASK]"], {"top_k": 3}
    if task == "translate":
        return ["Drei vier.", "Eins zwei acht.", "Vier."], {"beam": 2}
    if task == "recommend":
        return [",".join(run.data.items[1:4]), ",".join(run.data.items[2:9])], {"top_k": 3}
    if task == "lm":  # 40 tokens: past the 16-position context, so the window slides
        chars = sorted(c for c in run.tokenizer.index if c.isalpha())
        return ["".join(chars[:3]), "".join(chars[2:7])], {"max_new_tokens": 40, "temperature": 0.0}
    return [base64.b64encode(Path(IMAGE).read_bytes()).decode()], {"top_k": 2}


def _close(got, want) -> None:
    """Records equal, numbers to float tolerance."""
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            _close(got[key], want[key])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _close(a, b)
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-4)
    else:
        assert got == want


@pytest.mark.parametrize("task", ["classify", "mlm", "recommend", "vision", "translate", "lm"])
def test_onnx_backend_answers_as_torch_does(task, copy_run, tmp_path, capsys):
    run_dir = copy_run(task)
    assert main(["export", "onnx", str(run_dir), "--out", str(tmp_path / "onnx")]) == 0
    torch_run, onnx_run = open_run(run_dir), open_run(run_dir)
    use_onnx(onnx_run, tmp_path / "onnx")
    inputs, options = _inputs(task, torch_run)
    answers = {}
    for name, run in (("torch", torch_run), ("onnx", onnx_run)):
        with TestClient(build_app(run)) as client:
            response = client.post("/v1/predict", json={"inputs": inputs, **options})
            assert response.status_code == 200
            answers[name] = response.json()["predictions"]
            assert client.get("/v1/info").json()["backend"] == name
    _close(answers["onnx"], answers["torch"])


def test_onnx_backend_samples_as_torch_does(copy_run, tmp_path, capsys):
    """Sampling draws from the same generator over (nearly) the same probabilities: the same tokens."""
    run_dir = copy_run("lm")
    assert main(["export", "onnx", str(run_dir), "--out", str(tmp_path / "onnx")]) == 0
    torch_run, onnx_run = open_run(run_dir), open_run(run_dir)
    use_onnx(onnx_run, tmp_path / "onnx")
    prompt = "".join(sorted(c for c in torch_run.tokenizer.index if c.isalpha())[:2])
    settings = dict(max_new_tokens=30, temperature=1.0, top_k=5, seed=3, samples=3)
    assert onnx_run.generate(prompt, **settings) == torch_run.generate(prompt, **settings)
    with pytest.raises(UserError, match="compile and use_cache=False do not apply"):
        onnx_run.generate(prompt, max_new_tokens=2, use_cache=False)


def test_onnx_backend_refuses_another_export_and_reduced_precision(copy_run, tmp_path, capsys):
    classify, vision = copy_run("classify"), copy_run("vision")
    assert main(["export", "onnx", str(vision), "--out", str(tmp_path / "vision-onnx")]) == 0
    with pytest.raises(UserError, match="export of a vision run, not of this classify run"):
        use_onnx(open_run(classify), tmp_path / "vision-onnx")
    with pytest.raises(UserError, match="leave out --precision"):
        use_onnx(open_run(classify, precision="int8"), tmp_path / "vision-onnx")
    capsys.readouterr()
    assert main(["serve", str(classify), "--onnx", str(tmp_path / "vision-onnx")]) == 2
    assert "--onnx DIR goes with --backend onnx" in capsys.readouterr().err
    with pytest.raises(UserError, match="no translate export with generation graphs"):
        use_onnx(open_run(copy_run("translate")), tmp_path / "vision-onnx")
