"""Optimizer groups, learning-rate schedules and checkpoint files."""

from __future__ import annotations

import math
import os
import stat

import pytest
import torch
from torch import nn

from attnkit.atomic import atomic_path
from attnkit.engine import checkpoint
from attnkit.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from attnkit.models import TextClassifier, TextEncoderConfig


def _model() -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier(TextEncoderConfig(vocab_size=30, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=8), 3)


def test_no_decay_on_norms_biases_and_embeddings():
    model = _model()
    decay, plain = param_groups(model, 0.1)
    decayed = {id(p) for p in decay["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() == 2 for p in decay["params"])
    assert id(model.body.embed.weight) not in decayed
    assert id(model.body.pos.weight) not in decayed  # learned positions are a 2-D table, not decayed
    assert any("norm" in names[id(p)] for p in plain["params"])
    assert any(names[id(p)].endswith("bias") for p in plain["params"])
    assert plain["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in (decay, plain) for p in g["params"]) == total


@pytest.mark.parametrize("schedule", ["cosine", "linear", "inverse_sqrt", "constant"])
def test_schedules_warm_up_then_decay(schedule):
    kwargs = dict(schedule=schedule, warmup_steps=10, total_steps=100, min_ratio=0.0)
    assert lr_factor(0, **kwargs) == pytest.approx(0.1)
    assert lr_factor(9, **kwargs) == pytest.approx(1.0)
    if schedule == "cosine":
        assert lr_factor(54, **kwargs) == pytest.approx(0.5)
        assert lr_factor(99, **kwargs) == pytest.approx(0.0, abs=1e-12)
    if schedule == "linear":
        assert lr_factor(54, **kwargs) == pytest.approx(0.5)
    if schedule == "inverse_sqrt":
        assert lr_factor(39, **kwargs) == pytest.approx(math.sqrt(10 / 40))
    if schedule == "constant":
        assert lr_factor(99, **kwargs) == 1.0


def test_training_state_round_trip(tmp_path):
    model = _model()
    optimizer = build_optimizer(model, 1e-3, 0.01)
    scheduler = build_scheduler(optimizer, schedule="cosine", warmup_steps=2, total_steps=10)
    for _ in range(3):
        model(torch.randint(1, 30, (2, 5))).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    checkpoint.save_training_state(tmp_path / "last", model, optimizer, scheduler, {"step": 3})
    expected_next = torch.rand(3)

    fresh = _model()
    fresh_opt = build_optimizer(fresh, 1e-3, 0.01)
    fresh_sched = build_scheduler(fresh_opt, schedule="cosine", warmup_steps=2, total_steps=10)
    torch.rand(5)  # disturb the RNG; loading must restore it
    position = checkpoint.load_training_state(tmp_path / "last", fresh, fresh_opt, fresh_sched)
    assert position == {"step": 3}
    assert torch.equal(torch.rand(3), expected_next)
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    assert fresh_sched.get_last_lr() == scheduler.get_last_lr()
    state_a, state_b = optimizer.state_dict(), fresh_opt.state_dict()
    for index in state_a["state"]:
        for key, value in state_a["state"][index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b["state"][index][key]))


_CONSTANT = {"schedule": "constant", "warmup_steps": 0, "total_steps": 10}


def _train_steps(model, optimizer, steps, seed):
    torch.manual_seed(seed)
    for _ in range(steps):
        model(torch.randint(1, 30, (2, 5))).sum().backward()
        optimizer.step()
        optimizer.zero_grad()


def test_optimizer_is_fused_adamw_and_matches_the_reference_loop():
    model, reference = _model(), _model()
    optimizer = build_optimizer(model, 1e-2, 0.1, (0.9, 0.98))
    assert all(group["fused"] for group in optimizer.param_groups)
    loop = torch.optim.AdamW(param_groups(reference, 0.1), lr=1e-2, betas=(0.9, 0.98), foreach=False)
    _train_steps(model, optimizer, 5, seed=1)
    _train_steps(reference, loop, 5, seed=1)
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        # A key bias's gradient is zero but for rounding (softmax ignores a shift shared by all keys),
        # and Adam scales that noise up to full-size steps, so only there do the two roundings show.
        if not name.endswith("k_proj.bias"):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model.head.weight, _model().head.weight)  # the steps did move the weights


def test_state_saved_by_the_per_parameter_loop_resumes_fused(tmp_path):
    """Checkpoints of runs from before the fused optimizer load, and continue as the loop would."""
    model = _model()
    loop = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-2, foreach=False)
    scheduler = build_scheduler(loop, **_CONSTANT)
    _train_steps(model, loop, 3, seed=2)
    checkpoint.save_training_state(tmp_path / "last", model, loop, scheduler, {"step": 3})
    resumed = _model()
    fused = build_optimizer(resumed, 1e-2, 0.1)
    checkpoint.load_training_state(tmp_path / "last", resumed, fused, build_scheduler(fused, **_CONSTANT))
    assert all(group["fused"] for group in fused.param_groups)
    _train_steps(model, loop, 2, seed=3)
    _train_steps(resumed, fused, 2, seed=3)
    for (name, a), b in zip(model.named_parameters(), resumed.parameters(), strict=True):
        if not name.endswith("k_proj.bias"):  # see the test above
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_weights_load_through_wrappers_and_reject_mismatch(tmp_path):
    model = _model()
    checkpoint.save_weights_atomic(model, tmp_path / "model.safetensors")

    class Wrapper(nn.Module):  # shaped like DistributedDataParallel: the model under .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    target = Wrapper(_model())
    with torch.no_grad():
        for p in target.parameters():
            p.zero_()
    checkpoint.load_weights(target, tmp_path / "model.safetensors")
    for a, b in zip(model.parameters(), target.module.parameters(), strict=True):
        assert torch.equal(a, b)
    other = TextClassifier(TextEncoderConfig(vocab_size=30, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=8), 3)
    with pytest.raises(checkpoint.CheckpointError, match="do not fit"):
        checkpoint.load_weights(other, tmp_path / "model.safetensors")


def test_weights_of_another_shape_are_named_not_called_corrupt(tmp_path):
    checkpoint.save_weights_atomic(_model(), tmp_path / "model.safetensors")
    wider = TextClassifier(TextEncoderConfig(vocab_size=30, d_model=16, n_heads=2, n_layers=1, d_ff=48, max_len=8), 3)
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"do not fit the model \(body\.\S+\.ffn\.\S+ is \((16, 32|32, 16)\), "
        r"the model needs \((16, 48|48, 16)\)\)",
    ) as raised:
        checkpoint.load_weights(wider, tmp_path / "model.safetensors")
    assert "corrupt" not in str(raised.value)


def test_interrupted_swap_keeps_previous_checkpoint(tmp_path):
    model = _model()
    optimizer = build_optimizer(model, 1e-3, 0.0)
    scheduler = build_scheduler(optimizer, schedule="constant", warmup_steps=0, total_steps=1)
    checkpoint.save_training_state(tmp_path / "last", model, optimizer, scheduler, {"step": 1})
    (tmp_path / "last").rename(tmp_path / "last.old")  # a crash between the two renames of a swap
    found = checkpoint.find_training_state(tmp_path / "last")
    assert found == tmp_path / "last.old"


def test_layer_decay_gives_each_layer_its_rate_from_the_top_down():
    """A BERT-shaped classifier: embeddings (type and norm included) at depth 0, layer i at i + 1, the
    final norm, pooler and head at the top; every parameter in exactly one group."""
    config = TextEncoderConfig(vocab_size=30, d_model=8, n_heads=2, n_layers=3, d_ff=16, type_vocab_size=2)
    model = TextClassifier(TextEncoderConfig(**{**config.to_dict(), "embed_norm": True}), 3, pooling="pooler")
    optimizer = build_optimizer(model, lr=1.0, weight_decay=0.01, layer_decay=0.5)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert len(rate) == len(list(model.parameters()))
    named = dict(model.named_parameters())
    for name, expected in [
        ("body.embed.weight", 0.5**4),
        ("body.type_embed.weight", 0.5**4),
        ("body.embed_norm.weight", 0.5**4),
        ("body.pos.weight", 0.5**4),
        ("body.encoder.layers.0.self_attn.q_proj.weight", 0.5**3),
        ("body.encoder.layers.2.ffn.down_proj.bias", 0.5),
        ("pooler.0.weight", 1.0),
        ("head.weight", 1.0),
    ]:
        assert rate[id(named[name])] == expected, name
    plain = build_optimizer(model, lr=1.0, weight_decay=0.01)
    assert {group["lr"] for group in plain.param_groups} == {1.0} and len(plain.param_groups) == 2


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_and_checkpoints_get_the_modes_the_umask_gives(tmp_path, mask):
    # Files are written beside their target through tempfile, which makes them private (0600, 0700);
    # what is renamed into place must have the modes open() and mkdir() give, or a run directory
    # shared with others (or served by another user) is unreadable to them.
    model = _model()
    optimizer = build_optimizer(model, 1e-3, 0.01)
    scheduler = build_scheduler(optimizer, schedule="constant", warmup_steps=0, total_steps=10)
    before = os.umask(mask)
    try:
        with atomic_path(tmp_path / "metrics.json") as tmp:
            tmp.write_text("{}")
        checkpoint.save_training_state(tmp_path / "last", model, optimizer, scheduler, {"step": 0})
        (tmp_path / "plain.txt").write_text("")  # what open() gives, for comparison
    finally:
        os.umask(before)
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "metrics.json") == mode(tmp_path / "plain.txt") == 0o666 & ~mask
    assert mode(tmp_path / "last") == 0o777 & ~mask
    assert mode(tmp_path / "last" / "model.safetensors") == 0o666 & ~mask
