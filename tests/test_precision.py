"""`--precision fp32|bf16|int8`: every task's run at reduced precision stays close to float32, through
`open_run` and through the commands, and the conversions change what they say they change."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from attnkit.cli import main
from attnkit.errors import UserError
from attnkit.nn import MultiHeadAttention
from attnkit.precision import model_dtype, to_precision
from attnkit.runs import open_run

TASKS = ["classify", "mlm", "recommend", "translate", "lm", "vision"]
# Largest difference from float32 allowed, as a fraction of the largest float32 output: bfloat16 keeps
# 8 bits of mantissa (relative error 2^-9 per rounding), int8 keeps 256 levels per row of weights and
# per batch of activations; both compound over the layers.
TOLERANCE = {"bf16": 0.025, "int8": 0.05}


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("task", TASKS)
def test_every_task_runs_close_to_float32(task, precision, copy_run):
    run_dir = copy_run(task)
    reference = open_run(run_dir)
    batch = reference.example_batch(4, 8)
    want = reference.forward(batch).float()
    run = open_run(run_dir, precision=precision)
    assert run.precision == precision
    got = run.forward({k: v.to(run.dtype) if v.is_floating_point() else v for k, v in batch.items()}).float()
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got))  # masked scores stay masked
    scale = want[finite].abs().max()
    error = (got - want)[finite].abs().max()
    assert error <= TOLERANCE[precision] * scale, f"{task} {precision}: {error:.4f} of {scale:.4f}"
    assert error > 0  # the model really changed


@pytest.mark.parametrize("task", TASKS)
def test_fp32_packed_layers_give_every_task_the_same_outputs(task, copy_run, monkeypatch):
    from attnkit.nn import packed

    if not packed.packing_available():
        pytest.skip("this PyTorch build has no oneDNN linear kernels")
    run_dir = copy_run(task)
    monkeypatch.setattr(packed, "packing_available", lambda: False)
    reference = open_run(run_dir)
    batch = reference.example_batch(4, 8)
    want = reference.forward(batch)
    monkeypatch.undo()
    monkeypatch.setattr(packed, "_MIN_ELEMENTS", 0)  # the fixtures' layers are tiny: pack them all
    run = open_run(run_dir)
    assert any(isinstance(m, packed.PackedLinear) for m in run.model.modules())
    assert not any(isinstance(m, packed.PackedLinear) for m in reference.model.modules())
    torch.testing.assert_close(run.forward(batch), want, atol=1e-5, rtol=1e-5)


def test_bf16_holds_every_weight_in_bfloat16(copy_run):
    run = open_run(copy_run("translate"), precision="bf16")
    assert run.dtype == torch.bfloat16
    assert {p.dtype for p in run.model.parameters()} == {torch.bfloat16}


def test_int8_quantizes_every_linear_layer_and_fuses_self_attention(copy_run):
    run = open_run(copy_run("translate"), precision="int8")
    quantized = torch.ao.nn.quantized.dynamic.Linear
    assert not [name for name, m in run.model.named_modules() if type(m) is nn.Linear]
    assert any(isinstance(m, quantized) for m in run.model.modules())
    attentions = {name: m for name, m in run.model.named_modules() if isinstance(m, MultiHeadAttention)}
    assert all(isinstance(m.qkv_proj, quantized) for n, m in attentions.items() if not n.endswith("cross_attn"))
    assert all(m.qkv_proj is None for n, m in attentions.items() if n.endswith("cross_attn"))
    assert model_dtype(run.model) == torch.float32
    # the run's own model on disk is untouched: float32 opens as before
    assert all(type(m) is not quantized for m in open_run(run.run_dir).model.modules())


def test_fused_qkv_computes_the_same_attention():
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 5, 16)
    want = attention(x, causal=True)
    attention.fuse_qkv()
    assert attention.qkv_proj.weight.shape == (48, 16)
    torch.testing.assert_close(attention(x, causal=True), want, atol=1e-6, rtol=0)


def test_fuse_qkv_refuses_cross_attention_of_another_width():
    with pytest.raises(ValueError, match="self-attention"):
        MultiHeadAttention(16, 4, kv_dim=8).fuse_qkv()


def test_unknown_precision_and_int8_on_a_gpu_are_refused(copy_run):
    run_dir = copy_run("classify")
    with pytest.raises(UserError, match="fp32, bf16, int8"):
        open_run(run_dir, precision="fp16")
    with pytest.raises(UserError, match="CPU only"):
        to_precision(nn.Linear(2, 2), "int8", "cuda")


@pytest.mark.parametrize(
    ("task", "args"),
    [
        ("classify", ["predict", "RUN", "goal match team striker cup", "--top-k", "2"]),
        ("translate", ["predict", "RUN", "Drei vier.", "--beam", "2"]),
        ("lm", ["generate", "RUN", "--prompt", "to be or ", "--max-new-tokens", "8"]),
    ],
)
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_commands_take_a_precision(task, args, precision, copy_run, capsys):
    run_dir = str(copy_run(task))
    argv = [run_dir if a == "RUN" else a for a in args]
    assert main(argv) == 0
    float32 = capsys.readouterr().out
    assert main([*argv, "--precision", precision]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == float32.splitlines()[0]  # the same input line / first line of text
    assert out.strip()


def test_evaluate_reports_metrics_at_int8(copy_run, capsys):
    run_dir = copy_run("vision")
    assert main(["evaluate", str(run_dir), "--precision", "int8"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= metrics["accuracy"] <= 1
