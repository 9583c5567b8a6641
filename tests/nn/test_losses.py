"""linear_cross_entropy against PyTorch's cross_entropy on the materialised logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.nn.losses import linear_cross_entropy


def _inputs(n=23, d=6, v=11, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, d, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(v, generator=g, dtype=dtype, requires_grad=True)
    target = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, bias, target


@pytest.mark.parametrize("chunk_size", [1, 5, 23, 100])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("use_bias", [False, True])
def test_matches_cross_entropy_and_its_gradients(chunk_size, smoothing, use_bias):
    hidden, weight, bias, target = _inputs()
    target[[2, 9, 10]] = -100  # ignored rows count in neither the sum nor the mean
    b = bias if use_bias else None
    ours = linear_cross_entropy(hidden, weight, target, bias=b, label_smoothing=smoothing, chunk_size=chunk_size)
    grads = torch.autograd.grad(3.0 * ours, [hidden, weight, *([bias] if use_bias else [])])
    logits = hidden @ weight.T + (bias if use_bias else 0)
    ref = F.cross_entropy(logits, target, label_smoothing=smoothing, ignore_index=-100)
    ref_grads = torch.autograd.grad(3.0 * ref, [hidden, weight, *([bias] if use_bias else [])])
    torch.testing.assert_close(ours, ref)
    for mine, theirs in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(mine, theirs)


def test_float32_and_default_chunking():
    hidden, weight, _, target = _inputs(n=300, d=16, v=5000, dtype=torch.float32)
    ours = linear_cross_entropy(hidden, weight, target)  # default chunk: 209 rows of 5000 logits
    ours.backward()
    grad_h, grad_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    F.cross_entropy(hidden @ weight.T, target).backward()
    torch.testing.assert_close(ours, F.cross_entropy(hidden @ weight.T, target))
    torch.testing.assert_close(grad_h, hidden.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_w, weight.grad, rtol=1e-4, atol=1e-6)


def test_no_grad_gives_the_loss_only():
    hidden, weight, _, target = _inputs()
    with torch.no_grad():
        ours = linear_cross_entropy(hidden, weight, target, chunk_size=4)
    torch.testing.assert_close(ours, F.cross_entropy(hidden @ weight.T, target))
    assert not ours.requires_grad


def test_all_rows_ignored_is_nan_as_pytorch():
    hidden, weight, _, target = _inputs()
    target[:] = -100
    assert torch.isnan(linear_cross_entropy(hidden, weight, target))
    assert torch.isnan(F.cross_entropy(hidden @ weight.T, target))


def test_shape_errors():
    hidden, weight, _, target = _inputs()
    with pytest.raises(ValueError, match="weight"):
        linear_cross_entropy(hidden, weight.T, target)
    with pytest.raises(ValueError, match="target"):
        linear_cross_entropy(hidden, weight, target[:-1])
    with pytest.raises(ValueError, match="label_smoothing"):
        linear_cross_entropy(hidden, weight, target, label_smoothing=1.0)


def _left_out(logits, exclude, target):
    """logits (N, V) with each row's excluded classes at -inf, but for entries < 0 and the row's target."""
    hidden_mask = torch.zeros_like(logits, dtype=torch.bool)
    for row, classes in enumerate(exclude.tolist()):
        for c in classes:
            if c >= 0 and c != target[row]:
                hidden_mask[row, c] = True
    return logits.masked_fill(hidden_mask, float("-inf"))


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_exclude_matches_cross_entropy_with_those_logits_at_minus_infinity(chunk_size):
    hidden, weight, bias, target = _inputs()
    g = torch.Generator().manual_seed(1)
    exclude = torch.randint(-1, 11, (23, 4), generator=g)  # -1 = no entry
    exclude[0, 0] = target[0]  # a row's own target stays in its softmax
    target[5] = -100
    ours = linear_cross_entropy(hidden, weight, target, bias=bias, exclude=exclude, chunk_size=chunk_size)
    grads = torch.autograd.grad(ours, [hidden, weight, bias])
    logits = hidden @ weight.T + bias
    ref = F.cross_entropy(_left_out(logits, exclude, target), target, ignore_index=-100)
    ref_grads = torch.autograd.grad(ref, [hidden, weight, bias])
    torch.testing.assert_close(ours, ref)
    for mine, theirs in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(mine, theirs)
    assert ours < linear_cross_entropy(hidden, weight, target, bias=bias)  # fewer competitors, lower loss


def test_exclude_errors():
    hidden, weight, _, target = _inputs()
    with pytest.raises(ValueError, match="exclude must be"):
        linear_cross_entropy(hidden, weight, target, exclude=torch.zeros(5, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="label_smoothing"):
        linear_cross_entropy(hidden, weight, target, exclude=torch.zeros(23, 2, dtype=torch.long), label_smoothing=0.1)


@pytest.mark.parametrize("chunk_size", [7, 64, None])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_bfloat16_autocast_matches_autocast_cross_entropy(chunk_size, smoothing):
    """Under CPU autocast the products run in bfloat16, as `h @ W.T` there would; the softmax and the
    loss stay in float32, as autocast keeps cross_entropy; gradients come back in the inputs' dtype."""
    hidden, weight, _, target = _inputs(n=64, d=32, v=300, dtype=torch.float32)
    target[[3, 40]] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(hidden, weight, target, label_smoothing=smoothing, chunk_size=chunk_size)
        logits = hidden @ weight.T
        assert logits.dtype == torch.bfloat16
        ref = F.cross_entropy(logits, target, label_smoothing=smoothing)
    grads = torch.autograd.grad(ours, [hidden, weight])
    ref_grads = torch.autograd.grad(ref, [hidden, weight])
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-3)
    for mine, theirs in zip(grads, ref_grads, strict=True):
        assert mine.dtype == torch.float32
        torch.testing.assert_close(mine, theirs, rtol=0.02, atol=2e-4)
    exact = torch.autograd.grad(
        F.cross_entropy(hidden.double() @ weight.double().T, target, label_smoothing=smoothing), [hidden]
    )[0]
    assert (grads[0] - exact).abs().max() > 1e-6  # the products did run in bfloat16, not float32


def test_bias_and_exclude_under_autocast():
    hidden, weight, bias, target = _inputs(n=40, d=16, v=50, dtype=torch.float32)
    exclude = torch.randint(-1, 50, (40, 3), generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(hidden, weight, target, bias=bias, exclude=exclude, chunk_size=16)
    logits = (hidden.bfloat16() @ weight.bfloat16().T).float() + bias
    torch.testing.assert_close(ours, F.cross_entropy(_left_out(logits, exclude, target), target), rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad(ours, [hidden, weight, bias])
    assert [g.dtype for g in grads] == [torch.float32] * 3
