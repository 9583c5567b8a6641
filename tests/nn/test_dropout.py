"""attnkit's dropout: the distribution of `nn.Dropout`, drawn more cheaply on the CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnkit.nn import Dropout
from attnkit.nn.dropout import dropout

N = 400_000  # elements per statistical check: 5 standard deviations of a drop fraction are <= 0.004


def _rounded(p: float) -> float:
    """The drop probability actually used: p rounded to a multiple of 2^-16."""
    return round(p * 65536) / 65536


def _within(count: int, n: int, prob: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * prob) <= sigmas * math.sqrt(n * prob * (1 - prob))


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_drops_a_fraction_p_and_scales_the_rest_to_keep_the_mean(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(N, dtype=dtype)
    out = dropout(x, p)
    assert out.dtype == dtype and out.shape == x.shape
    dropped = int((out == 0).sum())
    assert _within(dropped, N, _rounded(p))
    scale = torch.tensor(1 / (1 - _rounded(p)), dtype=torch.float64).to(dtype)
    assert torch.equal(out[out != 0], scale.expand(N - dropped))
    # Unbiased: the rounded p and its own scale; 5 standard deviations of the mean.
    spread = 5 * math.sqrt(_rounded(p) / (1 - _rounded(p)) / N)
    assert abs(out.double().mean().item() - 1) <= spread + (1e-2 if dtype == torch.bfloat16 else 0)


def test_rounds_p_to_a_multiple_of_2_to_the_minus_16():
    torch.manual_seed(1)
    out = dropout(torch.ones(1000, dtype=torch.float64), 0.1)
    kept = out[out != 0]
    assert torch.equal(kept, torch.full_like(kept, 65536 / (65536 - 6554)))  # round(0.1 * 65536) = 6554


def test_each_of_the_four_elements_a_draw_serves_is_dropped_alike_and_independently():
    # A 64-bit draw is split into four 16-bit lanes: every lane must be uniform (a draw that left
    # the sign bit out would never drop the fourth lane) and neighbours must not be correlated.
    torch.manual_seed(2)
    p = 0.5
    dropped = dropout(torch.ones(N), p) == 0
    for lane in range(4):
        assert _within(int(dropped[lane::4].sum()), N // 4, p), f"lane {lane}"
    both = dropped[:-1] & dropped[1:]
    assert _within(int(both.sum()), N - 1, p * p, sigmas=6.0)
    assert _within(int((dropped[:-4] & dropped[4:]).sum()), N - 4, p * p, sigmas=6.0)


def test_gradient_flows_through_the_kept_entries_only_with_the_same_scale():
    torch.manual_seed(3)
    x = torch.ones(64, 33, requires_grad=True)
    out = Dropout(0.4)(x)
    g = torch.randn_like(out)
    out.backward(g)
    assert torch.equal(x.grad, g * out.detach())  # out = the mask times the scale, since x = 1


def test_runs_repeat_from_a_seed_and_differ_otherwise():
    x = torch.randn(1000)
    torch.manual_seed(4)
    first, second = dropout(x, 0.3), dropout(x, 0.3)
    torch.manual_seed(4)
    assert torch.equal(dropout(x, 0.3), first)
    assert not torch.equal(first, second)
    torch.manual_seed(5)
    assert not torch.equal(dropout(x, 0.3), first)


@pytest.mark.parametrize("shape", [(3, 5, 7), (1,), (0, 4), (2, 3)], ids=str)
def test_any_shape_and_layout(shape):
    torch.manual_seed(6)
    x = torch.randn(shape) + 10  # never zero
    for given in (x, x.transpose(0, -1)):
        out = dropout(given, 0.5)
        assert out.shape == given.shape
        kept = out != 0
        assert torch.allclose(out[kept], given[kept] * 2, rtol=1e-6, atol=0)


def test_a_p_that_rounds_to_0_or_1_is_pytorchs_own_dropout():
    x = torch.randn(50)
    for p in (1e-7, 1.0 - 1e-7, 1.0):
        torch.manual_seed(7)
        expected = F.dropout(x, p, True)
        torch.manual_seed(7)
        assert torch.equal(dropout(x, p), expected), p
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_inplace_writes_into_the_input():
    torch.manual_seed(8)
    x = torch.ones(100)
    out = Dropout(0.5, inplace=True)(x)
    assert out.data_ptr() == x.data_ptr()
    assert (x == 0).any() and (x == 2).any()


def test_module_is_the_function_in_training_and_the_identity_otherwise():
    x = torch.randn(4, 5, 6)
    module = Dropout(0.3)
    torch.manual_seed(9)
    expected = dropout(x, 0.3)
    torch.manual_seed(9)
    assert torch.equal(module(x), expected)
    assert (expected == 0).any()
    module.eval()
    assert module(x) is x
    assert Dropout(0.0)(x) is x
