"""Scaled dot-product attention: reference path == fused path == an independent float64 computation."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from attnkit.nn import (
    causal_mask,
    fused_attention,
    padding_mask,
    reference_attention,
    scaled_dot_product_attention,
)
from attnkit.nn.dropout import dropout
from tests.nn.helpers import allowed_mask, naive_attention

# name: (B, H, T, S, D, Dv, key lengths or None, causal)
CASES = {
    "self": (2, 2, 5, 5, 4, 4, None, False),
    "self_padding": (2, 2, 5, 5, 4, 4, [5, 3], False),
    "causal": (2, 2, 5, 5, 4, 4, None, True),
    "causal_padding": (2, 2, 5, 5, 4, 4, [5, 2], True),
    "cross": (2, 2, 3, 6, 4, 4, None, False),
    "cross_padding": (2, 2, 3, 6, 4, 4, [6, 2], False),
    "cross_value_dim": (2, 2, 3, 6, 4, 3, [4, 6], False),
    "one_head": (2, 1, 4, 4, 8, 8, [4, 3], False),
    "one_head_causal": (1, 1, 4, 4, 8, 8, None, True),
    "many_heads": (2, 4, 4, 6, 2, 2, [6, 1], False),
    "causal_cache": (2, 2, 2, 6, 4, 4, None, True),
    "causal_cache_padding": (2, 2, 3, 6, 4, 4, [6, 4], True),
    "causal_single_query": (2, 2, 1, 6, 4, 4, [6, 4], True),
}
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}


def _inputs(batch, heads, q_len, k_len, dim, v_dim, dtype):
    q = torch.randn(batch, heads, q_len, dim, dtype=dtype, requires_grad=True)
    k = torch.randn(batch, heads, k_len, dim, dtype=dtype, requires_grad=True)
    v = torch.randn(batch, heads, k_len, v_dim, dtype=dtype, requires_grad=True)
    return q, k, v


def _key_mask(lengths, k_len):
    """attnkit's (B, 1, 1, S) padding mask, built by hand."""
    if lengths is None:
        return None
    return (torch.arange(k_len)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_reference_fused_and_naive_agree(case, dtype):
    torch.manual_seed(0)
    batch, heads, q_len, k_len, dim, v_dim, lengths, causal = case
    q, k, v = _inputs(batch, heads, q_len, k_len, dim, v_dim, dtype)
    mask = _key_mask(lengths, k_len)
    allowed = allowed_mask(batch, q_len, k_len, lengths=lengths, causal=causal)
    grad_out = torch.randn(batch, heads, q_len, v_dim, dtype=dtype)

    expected, expected_weights = naive_attention(q, k, v, allowed)
    expected_grads = torch.autograd.grad((expected * grad_out.double()).sum(), (q, k, v))

    ref_out, ref_weights = reference_attention(q, k, v, mask, causal=causal)
    fused_out = fused_attention(q, k, v, mask, causal=causal)
    public_out = scaled_dot_product_attention(q, k, v, mask, causal=causal)
    public_out_w, public_weights = scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    tol = TOL[dtype]
    for out in (ref_out, fused_out, public_out, public_out_w):
        assert out.dtype == dtype and out.shape == (batch, heads, q_len, v_dim)
        assert_close(out.double(), expected.detach(), **tol)
    for weights in (ref_weights, public_weights):
        assert_close(weights.double(), expected_weights.detach(), **tol)

    for out in (ref_out, fused_out):
        grads = torch.autograd.grad((out * grad_out).sum(), (q, k, v))
        for grad, expected_grad in zip(grads, expected_grads, strict=True):
            assert_close(grad.double(), expected_grad.double(), **tol)


@pytest.mark.parametrize("k_len", [7, 200], ids=["short_keys_written_out", "long_keys_fused"])
@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_on_the_cpu_agrees_with_float64_on_either_path(k_len, causal, monkeypatch):
    import attnkit.nn.attention as attention

    written_out = []
    reference = attention.reference_attention
    monkeypatch.setattr(attention, "reference_attention", lambda *a, **kw: written_out.append(1) or reference(*a, **kw))
    torch.manual_seed(2)
    lengths = [k_len, k_len // 2, 0]  # the last row has no key at all
    q, k, v = _inputs(3, 2, k_len, k_len, 16, 16, torch.bfloat16)
    allowed = allowed_mask(3, k_len, k_len, lengths=lengths, causal=causal)
    grad_out = torch.randn(3, 2, k_len, 16, dtype=torch.bfloat16)
    expected, _ = naive_attention(q, k, v, allowed)
    expected_grads = torch.autograd.grad((expected * grad_out.double()).sum(), (q, k, v))

    out = scaled_dot_product_attention(q, k, v, _key_mask(lengths, k_len), causal=causal)
    assert bool(written_out) == (k_len <= attention.SHORT_KEYS)
    assert out.dtype == torch.bfloat16
    assert_close(out.double(), expected.detach(), atol=2e-2, rtol=2e-2)
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    grads = torch.autograd.grad((out * grad_out).sum(), (q, k, v))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert_close(grad.double(), expected_grad.double(), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize(
    ("q_len", "k_len", "lengths", "causal"),
    [(3, 4, [4, 2], False), (4, 4, [4, 3], True), (3, 4, None, True), (3, 4, [4, 0], True)],
    ids=["padding", "causal_padding", "causal_cache", "fully_masked_rows"],
)
def test_reference_gradcheck(q_len, k_len, lengths, causal):
    torch.manual_seed(1)
    # One head and width 2 keep the number of perturbed inputs (and so the run time) small.
    q, k, v = _inputs(2, 1, q_len, k_len, 2, 2, torch.float64)
    mask = _key_mask(lengths, k_len)
    assert torch.autograd.gradcheck(
        lambda q, k, v: reference_attention(q, k, v, mask, causal=causal), (q, k, v), eps=1e-6, atol=1e-5
    )


def test_return_weights_shape_rows_and_masked_keys():
    torch.manual_seed(2)
    batch, heads, q_len, k_len = 3, 2, 4, 5
    q, k, v = _inputs(batch, heads, q_len, k_len, 4, 4, torch.float32)
    allowed = torch.rand(batch, 1, q_len, k_len) > 0.4
    allowed[0, 0, 1] = False  # one query row with no key
    allowed[1, 0, 2] = True
    out, weights = scaled_dot_product_attention(q, k, v, allowed, return_weights=True)
    assert out.shape == (batch, heads, q_len, 4)
    assert weights.shape == (batch, heads, q_len, k_len)
    full = allowed.expand(batch, heads, q_len, k_len)
    has_key = full.any(dim=-1)
    assert not has_key.all() and has_key.any()
    row_sums = weights.sum(dim=-1)
    assert_close(row_sums[has_key], torch.ones_like(row_sums[has_key]), atol=1e-6, rtol=0)
    assert_close(row_sums[~has_key], torch.zeros_like(row_sums[~has_key]), atol=0, rtol=0)
    assert_close(weights[~full], torch.zeros_like(weights[~full]), atol=0, rtol=0)
    assert (weights[full] > 0).all()


@pytest.mark.parametrize("path", ["reference", "fused"])
def test_fully_masked_rows_give_zeros_without_nan(path):
    torch.manual_seed(3)
    batch, heads, q_len, k_len = 3, 2, 4, 5
    q, k, v = _inputs(batch, heads, q_len, k_len, 4, 4, torch.float32)
    allowed = torch.ones(batch, 1, q_len, k_len, dtype=torch.bool)
    allowed[0, :, 2] = False  # one query row of sequence 0 sees nothing
    allowed[1] = False  # sequence 1: every key is padding
    allowed[2, :, :, 3:] = False
    out = reference_attention(q, k, v, allowed)[0] if path == "reference" else fused_attention(q, k, v, allowed)
    empty = ~allowed.expand(batch, heads, q_len, k_len).any(dim=-1)  # (B, H, T)
    assert torch.isfinite(out).all()
    assert_close(out[empty], torch.zeros_like(out[empty]), atol=1e-7, rtol=0)

    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad((out * grad_out).sum(), (q, k, v))
    expected, _ = naive_attention(q, k, v, allowed)
    expected_grads = torch.autograd.grad((expected * grad_out.double()).sum(), (q, k, v))
    assert_close(out.double(), expected.detach(), atol=1e-5, rtol=1e-5)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert torch.isfinite(grad).all()
        assert_close(grad.double(), expected_grad.double(), atol=1e-5, rtol=1e-5)
    # No gradient flows into the queries of rows that attend to nothing.
    assert_close(grads[0][empty], torch.zeros_like(grads[0][empty]), atol=0, rtol=0)


def test_a_compiled_single_query_matches_the_independent_computation():
    # Compiled with one query on the CPU, attention takes the written-out path (a decoding step).
    torch.manual_seed(4)
    q, k, v = _inputs(3, 2, 1, 6, 4, 4, torch.float32)
    allowed = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    allowed[0, ..., 4:] = False
    allowed[1] = False  # every key hidden: zeros, not NaN
    with torch.no_grad():
        out = torch.compile(scaled_dot_product_attention, fullgraph=True)(q, k, v, allowed)
    expected, _ = naive_attention(q, k, v, allowed)
    assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert_close(out[1], torch.zeros_like(out[1]), atol=0, rtol=0)


def test_reference_dropout_returns_pre_dropout_weights():
    torch.manual_seed(4)
    q, k, v = _inputs(2, 2, 4, 5, 4, 4, torch.float32)
    mask = _key_mask([5, 3], 5)
    clean_out, clean_weights = reference_attention(q, k, v, mask)

    torch.manual_seed(123)
    out, weights = reference_attention(q, k, v, mask, dropout_p=0.5)
    assert_close(weights, clean_weights, atol=0, rtol=0)
    assert not torch.allclose(out, clean_out, atol=1e-3)
    # The output is the dropped-out weights (same random draw) times the values.
    torch.manual_seed(123)
    assert_close(out, dropout(clean_weights, 0.5) @ v, atol=1e-6, rtol=1e-6)
    # The same seed reproduces the same output.
    torch.manual_seed(123)
    assert_close(reference_attention(q, k, v, mask, dropout_p=0.5)[0], out, atol=0, rtol=0)


@pytest.mark.parametrize("return_weights", [False, True], ids=["fused", "reference"])
def test_no_dropout_is_deterministic_and_dropout_changes_output(return_weights):
    torch.manual_seed(5)
    q, k, v = _inputs(2, 2, 4, 5, 4, 4, torch.float32)

    def run(p):
        result = scaled_dot_product_attention(q, k, v, dropout_p=p, return_weights=return_weights)
        return result[0] if return_weights else result

    first = run(0.0)
    torch.manual_seed(99)
    assert_close(run(0.0), first, atol=0, rtol=0)
    assert not torch.allclose(run(0.5), first, atol=1e-3)


def test_non_bool_mask_raises_type_error():
    torch.manual_seed(6)
    q, k, v = _inputs(1, 1, 2, 3, 4, 4, torch.float32)
    for mask in (torch.ones(1, 1, 2, 3), torch.ones(1, 1, 2, 3, dtype=torch.long)):
        with pytest.raises(TypeError, match="bool"):
            scaled_dot_product_attention(q, k, v, mask)


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "v_shape"),
    [
        ((2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4)),
        ((1, 2, 2, 4), (2, 3, 4), (1, 2, 3, 4)),
        ((1, 2, 2, 4), (1, 2, 3, 4), (1, 1, 2, 3, 4)),
        ((1, 2, 2, 4), (1, 2, 3, 5), (1, 2, 3, 4)),
        ((1, 2, 2, 4), (1, 2, 3, 4), (1, 2, 4, 4)),
    ],
    ids=["q_ndim", "k_ndim", "v_ndim", "head_dim", "kv_length"],
)
@pytest.mark.parametrize("return_weights", [False, True])
def test_bad_shapes_raise_value_error(q_shape, k_shape, v_shape, return_weights):
    torch.manual_seed(7)
    q, k, v = torch.randn(q_shape), torch.randn(k_shape), torch.randn(v_shape)
    with pytest.raises(ValueError):
        scaled_dot_product_attention(q, k, v, return_weights=return_weights)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_outside_unit_interval_raises(p):
    torch.manual_seed(8)
    q, k, v = _inputs(1, 1, 2, 3, 4, 4, torch.float32)
    with pytest.raises(ValueError, match="dropout_p"):
        scaled_dot_product_attention(q, k, v, dropout_p=p)


# ---------------------------------------------------------------- masks


def test_padding_mask_from_ids():
    ids = torch.tensor([[5, 3, 0, 0], [7, 0, 0, 0], [1, 2, 3, 4]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(padding_mask(ids), expected)
    assert padding_mask(ids).dtype == torch.bool


def test_padding_mask_from_ids_with_other_pad_id_and_left_padding():
    ids = torch.tensor([[1, 1, 4, 0], [1, 9, 8, 7]])
    expected = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(padding_mask(ids, pad_id=1), expected)


def test_padding_mask_from_lengths():
    lengths = torch.tensor([3, 1, 0])
    expected = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    assert torch.equal(padding_mask(lengths=lengths), expected)
    wide = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(padding_mask(lengths=lengths, max_len=5), wide)
    assert torch.equal(padding_mask(lengths=lengths, max_len=3), expected)


def test_padding_mask_errors():
    ids = torch.tensor([[1, 0]])
    with pytest.raises(ValueError, match="exactly one"):
        padding_mask(ids, lengths=torch.tensor([1]))
    with pytest.raises(ValueError, match="exactly one"):
        padding_mask()
    with pytest.raises(ValueError, match="max_len"):
        padding_mask(lengths=torch.tensor([3, 4]), max_len=3)
    with pytest.raises(ValueError):
        padding_mask(torch.tensor([1, 0]))
    with pytest.raises(ValueError):
        padding_mask(lengths=torch.tensor([2, -1]))


def test_causal_mask_square():
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(3), expected)
    assert torch.equal(causal_mask(6), torch.ones(6, 6).tril().bool())


def test_causal_mask_rectangular_default_offset_is_bottom_right():
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 4), expected)
    assert torch.equal(causal_mask(2, 4, offset=2), expected)
    assert torch.equal(causal_mask(1, 5), torch.ones(1, 5, dtype=torch.bool))


def test_causal_mask_explicit_offset():
    top_left = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 4, offset=0), top_left)
    assert torch.equal(causal_mask(2, 4, offset=1), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]).bool())
    assert causal_mask(2, 4, device="cpu").device.type == "cpu"
