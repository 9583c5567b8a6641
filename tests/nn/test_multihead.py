"""MultiHeadAttention against torch.nn.MultiheadAttention with copied weights, and its KV cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from attnkit.nn import KVCache, MultiHeadAttention, RotaryEmbedding, StaticKVCache
from tests.nn.helpers import copy_mha, perturb_

D_MODEL, N_HEADS = 16, 4
TOL = dict(atol=1e-5, rtol=1e-5)


def _pair(kv_dim: int | None = None) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    """attnkit's and torch's attention with the same (perturbed, so biases are non-zero) weights."""
    theirs = nn.MultiheadAttention(D_MODEL, N_HEADS, batch_first=True, kdim=kv_dim, vdim=kv_dim)
    perturb_(theirs)
    ours = MultiHeadAttention(D_MODEL, N_HEADS, kv_dim=kv_dim)
    copy_mha(theirs, ours)
    return ours, theirs


def _keep(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # (B, S)


# name: (T, S or None for self-attention, kv_dim, key lengths or None, causal)
CASES = {
    "self": (5, None, None, None, False),
    "self_padding": (5, None, None, [5, 3], False),
    "causal": (5, None, None, None, True),
    "causal_padding": (5, None, None, [5, 2], True),
    "cross": (3, 6, None, None, False),
    "cross_kv_dim": (3, 6, 12, None, False),
    "cross_kv_dim_padding": (3, 6, 12, [6, 2], False),
    "cross_causal_bottom_right": (3, 6, 12, [6, 5], True),
}


def _run_case(case, return_weights: bool):
    q_len, k_len, kv_dim, lengths, causal = case
    ours, theirs = _pair(kv_dim)
    x = torch.randn(2, q_len, D_MODEL, requires_grad=True)
    context = None if k_len is None else torch.randn(2, k_len, kv_dim or D_MODEL, requires_grad=True)
    keys_from = x if context is None else context
    k_len = keys_from.size(1)
    keep = None if lengths is None else _keep(lengths, k_len)

    mask = None if keep is None else keep[:, None, None, :]
    result = ours(x, context, mask=mask, causal=causal, return_weights=return_weights)
    out, weights = result if return_weights else (result, None)

    # torch's bool masks mean "blocked": the inverse of ours. Its causal mask is built here by hand
    # with queries at the last T positions.
    blocked = None
    if causal:
        blocked = torch.arange(k_len)[None, :] > torch.arange(q_len)[:, None] + (k_len - q_len)  # (T, S)
    expected, expected_weights = theirs(
        x,
        keys_from,
        keys_from,
        key_padding_mask=None if keep is None else ~keep,
        attn_mask=blocked,
        need_weights=return_weights,
        average_attn_weights=False,
    )
    return x, context, out, weights, expected, expected_weights


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_torch_multihead_attention(case):
    torch.manual_seed(0)
    x, context, out, _, expected, _ = _run_case(case, return_weights=False)
    assert out.shape == expected.shape
    assert_close(out, expected, **TOL)

    grad_out = torch.randn_like(out)
    inputs = (x,) if context is None else (x, context)
    grads = torch.autograd.grad((out * grad_out).sum(), inputs)
    expected_grads = torch.autograd.grad((expected * grad_out).sum(), inputs)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert_close(grad, expected_grad, **TOL)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_weights_match_torch_per_head_weights(case):
    torch.manual_seed(1)
    _, _, out, weights, expected, expected_weights = _run_case(case, return_weights=True)
    assert weights.shape == expected_weights.shape == (2, N_HEADS, out.size(1), expected_weights.size(-1))
    assert_close(weights, expected_weights, **TOL)
    assert_close(out, expected, **TOL)


def test_fully_padded_context_gives_bias_not_nan():
    """A sequence whose keys are all padding: torch may give NaN there, so compare the other one only."""
    torch.manual_seed(2)
    ours, theirs = _pair(12)
    x, context = torch.randn(2, 3, D_MODEL), torch.randn(2, 4, 12)
    keep = _keep([4, 0], 4)
    out = ours(x, context, mask=keep[:, None, None, :])
    expected, _ = theirs(x, context, context, key_padding_mask=~keep, need_weights=False)
    assert_close(out[0], expected[0], **TOL)
    assert torch.isfinite(out).all()
    # Attention contributes zeros, so what is left is the output projection's bias.
    assert_close(out[1], ours.out_proj.bias.detach().expand(3, D_MODEL), **TOL)


def test_n_heads_must_divide_d_model():
    with pytest.raises(ValueError, match="divide"):
        MultiHeadAttention(10, 4)


# ---------------------------------------------------------------- KV cache


@pytest.mark.parametrize("chunks", [[1] * 7, [2, 3, 2], [3, 1, 3]], ids=["steps", "chunks_232", "chunks_313"])
@pytest.mark.parametrize("left_padding", [False, True])
def test_causal_cache_matches_full_forward(chunks, left_padding):
    torch.manual_seed(3)
    mha = MultiHeadAttention(D_MODEL, N_HEADS)
    perturb_(mha)
    x = torch.randn(2, sum(chunks), D_MODEL)
    keep = None
    if left_padding:  # the first keys of sequence 1 are padding; its first query rows see nothing
        keep = torch.ones(2, x.size(1), dtype=torch.bool)
        keep[1, :2] = False
    full = mha(x, mask=None if keep is None else keep[:, None, None, :], causal=True)

    cache, outs, start = KVCache(), [], 0
    for size in chunks:
        end = start + size
        mask = None if keep is None else keep[:, None, None, :end]
        outs.append(mha(x[:, start:end], mask=mask, causal=True, cache=cache))
        assert cache.length == end
        start = end
    assert_close(torch.cat(outs, dim=1), full, **TOL)


@pytest.mark.parametrize("chunks", [[1] * 7, [3, 1, 3]], ids=["steps", "chunks_313"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("rope", [False, True])
def test_static_cache_matches_attention_over_the_prefix(chunks, causal, rope):
    torch.manual_seed(7)
    mha = MultiHeadAttention(D_MODEL, N_HEADS, rope=RotaryEmbedding(D_MODEL // N_HEADS, 16) if rope else None)
    perturb_(mha)
    x = torch.randn(2, sum(chunks), D_MODEL)
    cache, start = StaticKVCache(capacity=10), 0  # 3 slots never written: hidden, not attended
    for size in chunks:
        end = start + size
        out = mha(x[:, start:end], causal=causal, cache=cache)
        # Each chunk's queries see what the growing cache would hold: the prefix up to `end`.
        assert_close(out, mha(x[:, :end], causal=causal)[:, start:end], **TOL)
        assert cache.length == end and cache.k.shape == (2, N_HEADS, 10, D_MODEL // N_HEADS)
        start = end


def test_static_cache_reorders_rows_and_refuses_cross_attention():
    torch.manual_seed(8)
    mha = MultiHeadAttention(D_MODEL, N_HEADS)
    x = torch.randn(3, 4, D_MODEL)
    cache = StaticKVCache(4)
    mha(x[:, :3], causal=True, cache=cache)
    cache.reorder(torch.tensor([2, 0]))
    out = mha(x[[2, 0], 3:], causal=True, cache=cache)
    assert_close(out, mha(x[[2, 0]], causal=True)[:, 3:], **TOL)
    with pytest.raises(ValueError, match="capacity"):
        StaticKVCache(0)
    with pytest.raises(ValueError, match="self-attention"):
        mha(x, torch.randn(3, 5, D_MODEL), cache=StaticKVCache(5))


def test_cross_attention_cache_projects_context_once():
    torch.manual_seed(4)
    mha = MultiHeadAttention(D_MODEL, N_HEADS, kv_dim=12)
    perturb_(mha)
    x, context = torch.randn(2, 4, D_MODEL), torch.randn(2, 6, 12)
    keep = _keep([6, 3], 6)
    mask = keep[:, None, None, :]
    calls = []
    mha.k_proj.register_forward_hook(lambda *_: calls.append("k"))
    mha.v_proj.register_forward_hook(lambda *_: calls.append("v"))

    cache = KVCache()
    first = mha(x[:, :1], context, mask=mask, cache=cache)
    assert cache.length == 6
    assert calls == ["k", "v"]
    assert_close(first, mha(x[:, :1], context, mask=mask), **TOL)

    other_context = torch.randn(2, 6, 12)
    for t in range(1, 4):
        calls.clear()
        step = mha(x[:, t : t + 1], other_context, mask=mask, cache=cache)
        assert calls == []  # the cached keys and values were reused, not recomputed
        assert cache.length == 6
        assert_close(step, mha(x[:, t : t + 1], context, mask=mask), **TOL)
        # ...and the other context would have given a different answer.
        assert not torch.allclose(step, mha(x[:, t : t + 1], other_context, mask=mask), atol=1e-3)


def test_inference_reuses_fused_projection_until_a_weight_changes():
    torch.manual_seed(5)
    mha = MultiHeadAttention(D_MODEL, N_HEADS)
    x = torch.randn(2, 3, D_MODEL)
    with torch.inference_mode():
        before = mha(x)
    assert_close(before, mha(x), **TOL)  # the kept concatenation equals a fresh one
    with torch.no_grad():
        mha.k_proj.weight.mul_(2.0)  # an in-place update, as an optimizer step makes
    with torch.inference_mode():
        after_update = mha(x)
    assert_close(after_update, mha(x), **TOL)
    assert not torch.allclose(after_update, before, atol=1e-4)
    mha.v_proj.bias = nn.Parameter(torch.randn(D_MODEL))  # a replaced tensor
    with torch.inference_mode():
        after_replace = mha(x)
    assert_close(after_replace, mha(x), **TOL)
    assert not torch.allclose(after_replace, after_update, atol=1e-4)
    mha.load_state_dict(MultiHeadAttention(D_MODEL, N_HEADS).state_dict())  # loaded weights
    with torch.inference_mode():
        after_load = mha(x)
    assert_close(after_load, mha(x), **TOL)
    assert not torch.allclose(after_load, after_replace, atol=1e-4)


def test_decoding_takes_fused_projection_from_its_cache():
    torch.manual_seed(6)
    mha = MultiHeadAttention(D_MODEL, N_HEADS)
    x = torch.randn(2, 4, D_MODEL)
    with torch.inference_mode():
        cache = KVCache()
        mha(x[:, :2], causal=True, cache=cache)
        weight, bias = cache.projection
        assert_close(weight, torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
        assert_close(bias, torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        mha(x[:, 2:3], causal=True, cache=cache)
        assert cache.projection[0] is weight  # built once per decoding, not at each step
    with torch.no_grad():
        mha.q_proj.weight.mul_(2.0)  # between two decodings, as training would
    with torch.inference_mode():
        fresh = KVCache()
        steps = [mha(x[:, t : t + 1], causal=True, cache=fresh) for t in range(4)]
    assert_close(torch.cat(steps, dim=1), mha(x, causal=True), **TOL)  # a new cache sees the new weights


def test_kv_cache_append_and_reorder():
    torch.manual_seed(5)
    cache = KVCache()
    assert cache.length == 0
    cache.reorder(torch.tensor([0]))  # empty: nothing to do, no error
    k1, v1 = torch.randn(3, 2, 2, 4), torch.randn(3, 2, 2, 4)
    k2, v2 = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
    cache.append(k1, v1)
    all_k, all_v = cache.append(k2, v2)
    assert cache.length == 3
    assert torch.equal(all_k, torch.cat([k1, k2], dim=2))
    assert torch.equal(all_v, torch.cat([v1, v2], dim=2))

    full_k, full_v = torch.cat([k1, k2], dim=2), torch.cat([v1, v2], dim=2)
    index = torch.tensor([2, 0, 0])  # as a beam search does: drop row 1, duplicate row 0
    cache.reorder(index)
    assert torch.equal(cache.k, full_k[index])
    assert torch.equal(cache.v, full_v[index])
    cache.reorder(torch.tensor([1]))  # row 1 of the reordered cache is original row 0
    assert cache.length == 3
    assert torch.equal(cache.k, full_k[:1])
    assert torch.equal(cache.v, full_v[:1])


def test_kv_cache_many_appends_grow_the_buffer_and_keep_every_step():
    torch.manual_seed(6)
    cache = KVCache()
    steps = [torch.randn(2, 3, n, 4) for n in (3, 1, 1, 2, 1, 1, 1, 5, 1)]
    with torch.inference_mode():
        for i, k in enumerate(steps):
            all_k, all_v = cache.append(k, -k)
            expected = torch.cat(steps[: i + 1], dim=2)
            assert torch.equal(all_k, expected) and torch.equal(all_v, -expected)
        assert cache.length == 16
        index = torch.tensor([1, 1])
        cache.reorder(index)  # after the buffers have grown
        cache.append(steps[0], steps[0])
    assert torch.equal(cache.k, torch.cat([expected[index], steps[0]], dim=2))
    assert torch.equal(cache.v[:, :, :16], -expected[index])


def test_kv_cache_concatenates_when_gradients_flow():
    cache = KVCache()
    k1 = torch.randn(1, 2, 2, 4, requires_grad=True)
    k2 = torch.randn(1, 2, 1, 4, requires_grad=True)
    cache.append(k1, k1 * 2)
    all_k, all_v = cache.append(k2, k2 * 2)
    (all_k.sum() + all_v.sum()).backward()  # no in-place write into a tensor autograd has saved
    assert torch.equal(k1.grad, torch.full_like(k1, 3.0)) and torch.equal(k2.grad, torch.full_like(k2, 3.0))


# ---------------------------------------------------------------- rotary embeddings


@pytest.mark.parametrize("chunks", [[1] * 6, [2, 3, 1]], ids=["steps", "chunks"])
def test_rope_cache_matches_full_forward(chunks):
    torch.manual_seed(6)
    rope = RotaryEmbedding(D_MODEL // N_HEADS, max_len=16)
    mha = MultiHeadAttention(D_MODEL, N_HEADS, rope=rope)
    perturb_(mha)
    x = torch.randn(2, sum(chunks), D_MODEL)
    full = mha(x, causal=True)

    # The rotation really is applied: the same weights without it give something else.
    plain = MultiHeadAttention(D_MODEL, N_HEADS)
    plain.load_state_dict(mha.state_dict())
    assert not torch.allclose(plain(x, causal=True), full, atol=1e-3)

    cache, outs, start = KVCache(), [], 0
    for size in chunks:
        outs.append(mha(x[:, start : start + size], causal=True, cache=cache))
        start += size
    assert_close(torch.cat(outs, dim=1), full, **TOL)


def test_rope_with_context_raises():
    torch.manual_seed(7)
    mha = MultiHeadAttention(D_MODEL, N_HEADS, rope=RotaryEmbedding(D_MODEL // N_HEADS, max_len=8))
    with pytest.raises(ValueError, match="self-attention"):
        mha(torch.randn(1, 2, D_MODEL), torch.randn(1, 3, D_MODEL))
