"""`attnkit export onnx`: every task's tiny run exported and run in onnxruntime, equal to PyTorch at
shapes other than the exported example's, with a half-padded and a fully padded row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnkit.cli import main
from attnkit.runs import open_run

onnxruntime = pytest.importorskip("onnxruntime", reason="the export tests need onnxruntime (extra: onnx)")
pytest.importorskip("onnxscript", reason="torch's dynamo ONNX exporter needs onnxscript (extra: onnx)")

TASKS = ["classify", "mlm", "recommend", "translate", "lm", "vision"]
PAD_KEY = {"classify": "ids", "mlm": "ids", "recommend": "ids", "translate": "src"}


@pytest.mark.parametrize("task", TASKS)
def test_every_task_exports_and_onnxruntime_agrees(task, copy_run, tmp_path, capsys):
    run_dir = copy_run(task)
    out = tmp_path / "onnx"
    assert main(["export", "onnx", str(run_dir), "--out", str(out)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    described = json.loads((out / "export.json").read_text())
    assert described["task"] == task and described["max_abs_diff"] <= 1e-4
    run = open_run(run_dir)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    length = max(2, described["max_length"] // 4)
    for batch_size in (4, 1):
        batch = run.example_batch(batch_size, length)
        if task in PAD_KEY and batch_size > 1:  # a row that is padding only
            batch[PAD_KEY[task]][1] = run.model.config.pad_id if task == "translate" else 0
        expected = run.forward(batch).float().numpy()
        got = session.run(None, {name: tensor.numpy() for name, tensor in batch.items()})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_a_tokenizer_and_the_run_records_travel_with_the_graph(copy_run, tmp_path):
    run_dir = copy_run("classify")
    assert main(["export", "onnx", str(run_dir), "--out", str(tmp_path / "onnx")]) == 0
    described = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert described["classes"] == json.loads((run_dir / "config.json").read_text())["classes"]
    assert described["inputs"] == [{"name": "ids", "dtype": "int64", "axes": ["batch", "length"]}]
    assert (tmp_path / "onnx" / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()


def test_an_export_never_overwrites_a_folder(copy_run, tmp_path, capsys):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "keep.txt").write_text("mine")
    assert main(["export", "onnx", str(copy_run("classify")), "--out", str(tmp_path / "onnx")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "onnx" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("task", ["translate", "lm"])
def test_generation_graphs_decode_greedily_as_attnkit_does(task, copy_run, tmp_path):
    import torch

    from attnkit.decode import CausalLMStepper, Seq2SeqStepper, greedy_decode
    from attnkit.export.generation import greedy

    run_dir, out = copy_run(task), tmp_path / "onnx"
    assert main(["export", "onnx", str(run_dir), "--out", str(out)]) == 0
    described = json.loads((out / "export.json").read_text())
    graphs = ["encoder.onnx", "decoder_step.onnx"] if task == "translate" else ["decoder_step.onnx"]
    assert described["generation"]["graphs"] == graphs and all((out / g).is_file() for g in graphs)
    model = open_run(run_dir).model
    generator = torch.Generator().manual_seed(7)
    if task == "translate":  # other shapes than the export's check: 2 rows, one of them padded
        src = torch.randint(5, model.config.src_vocab_size, (2, 9), generator=generator)
        src[1, 5:] = model.config.pad_id
        start, pad, eos = torch.full((2,), model.bos_id), model.config.pad_id, model.eos_id
        want = greedy_decode(Seq2SeqStepper(model, src), start, eos_id=eos, max_new_tokens=20, pad_id=pad)
        got = greedy(out, start[:, None].numpy(), max_new_tokens=20, eos_id=eos, src=src.numpy(), pad_id=pad)
    else:
        start = torch.randint(1, model.config.vocab_size, (4, 3), generator=generator)
        want = greedy_decode(CausalLMStepper(model), start, eos_id=None, max_new_tokens=10, pad_id=None)
        got = greedy(out, start.numpy(), max_new_tokens=10, eos_id=None, pad_id=None)
    assert len(set(want.flatten().tolist())) > 2  # a model that does not repeat one token
    assert got.tolist() == want.tolist()


def test_beam_search_steps_through_the_exported_graphs_as_through_the_model(copy_run, tmp_path):
    import torch

    from attnkit.decode import Seq2SeqStepper, beam_search
    from attnkit.export.generation import OnnxGenerator, OnnxStepper
    from attnkit.tasks.translate.decoding import translate_ids

    run_dir, out = copy_run("translate"), tmp_path / "onnx"
    assert main(["export", "onnx", str(run_dir), "--out", str(out)]) == 0
    model, generator = open_run(run_dir).model, OnnxGenerator(out)
    src = torch.randint(5, model.config.src_vocab_size, (3, 8), generator=torch.Generator().manual_seed(3))
    src[2, 4:] = model.config.pad_id
    start, pad, eos = torch.full((3,), model.bos_id), model.config.pad_id, model.eos_id
    for beam in (1, 3):
        want = beam_search(Seq2SeqStepper(model, src), start, eos_id=eos, max_new_tokens=15, beam_size=beam, pad_id=pad)
        got = beam_search(OnnxStepper(generator, src), start, eos_id=eos, max_new_tokens=15, beam_size=beam, pad_id=pad)
        assert torch.equal(got.tokens, want.tokens)
        torch.testing.assert_close(got.scores, want.scores, atol=1e-4, rtol=0)
    sources = [row[row != pad].tolist() for row in src]
    assert translate_ids(model, sources, stepper=lambda s: OnnxStepper(generator, s)) == translate_ids(model, sources)
