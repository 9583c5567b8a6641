"""Encoder/decoder layers and stacks against PyTorch's with copied weights; feed-forward; norms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from attnkit.nn import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    FeedForward,
    LayerNorm,
    MaskedBatchNorm,
    RMSNorm,
    make_norm,
)
from tests.nn.helpers import copy_layer, copy_stack, perturb_

D_MODEL, N_HEADS, D_FF = 16, 4, 32
TOL = dict(atol=1e-5, rtol=1e-5)

norm_first_param = pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
activation_param = pytest.mark.parametrize("activation", ["relu", "gelu"])


def _keep(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # (B, L)


def _blocked_causal(length: int) -> torch.Tensor:
    """torch's polarity: True = may NOT attend."""
    return torch.ones(length, length, dtype=torch.bool).triu(1)


def _layer_args(activation: str, norm_first: bool) -> dict:
    return dict(dropout=0.0, activation=activation, norm_first=norm_first)


def _torch_layer_args(activation: str, norm_first: bool) -> dict:
    return dict(dropout=0.0, activation=activation, norm_first=norm_first, batch_first=True)


# Both models run in training mode with dropout 0.0 everywhere: deterministic, and torch's
# inference fast path (which needs eval mode) is never taken.


@norm_first_param
@activation_param
@pytest.mark.parametrize("padding", [False, True], ids=["no_pad", "pad"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_encoder_layer_matches_torch(norm_first, activation, padding, causal):
    torch.manual_seed(0)
    theirs = perturb_(nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF, **_torch_layer_args(activation, norm_first)))
    ours = EncoderLayer(D_MODEL, N_HEADS, D_FF, **_layer_args(activation, norm_first))
    copy_layer(theirs, ours)
    x = torch.randn(2, 5, D_MODEL, requires_grad=True)
    keep = _keep([5, 3], 5) if padding else torch.ones(2, 5, dtype=torch.bool)

    out = ours(x, keep=keep if padding else None, causal=causal)
    expected = theirs(
        x,
        src_mask=_blocked_causal(5) if causal else None,
        src_key_padding_mask=~keep if padding else None,
        is_causal=causal,
    )
    assert_close(out[keep], expected[keep], **TOL)

    grad_out = torch.randn_like(out) * keep[..., None]  # the loss reads real positions only
    grad = torch.autograd.grad((out * grad_out).sum(), x)[0]
    expected_grad = torch.autograd.grad((expected * grad_out).sum(), x)[0]
    assert_close(grad, expected_grad, **TOL)


@norm_first_param
@activation_param
@pytest.mark.parametrize("memory_padding", [False, True], ids=["mem_full", "mem_pad"])
@pytest.mark.parametrize("target_padding", [False, True], ids=["tgt_full", "tgt_pad"])
def test_decoder_layer_matches_torch(norm_first, activation, memory_padding, target_padding):
    torch.manual_seed(1)
    theirs = perturb_(nn.TransformerDecoderLayer(D_MODEL, N_HEADS, D_FF, **_torch_layer_args(activation, norm_first)))
    ours = DecoderLayer(D_MODEL, N_HEADS, D_FF, **_layer_args(activation, norm_first))
    copy_layer(theirs, ours)
    x, memory = torch.randn(2, 4, D_MODEL), torch.randn(2, 6, D_MODEL)
    keep = torch.ones(2, 4, dtype=torch.bool)
    if target_padding:
        # Left padding, so that real queries have padded keys before them: with right padding the
        # causal mask alone would already hide every pad. (torch gives NaN at the fully masked
        # query (1, 0); only real positions are compared.)
        keep[1, :2] = False
    memory_keep = _keep([6, 3], 6) if memory_padding else None

    out = ours(x, memory, keep=keep if target_padding else None, memory_keep=memory_keep)
    expected = theirs(
        x,
        memory,
        tgt_mask=_blocked_causal(4),
        tgt_is_causal=True,
        tgt_key_padding_mask=~keep if target_padding else None,
        memory_key_padding_mask=None if memory_keep is None else ~memory_keep,
    )
    assert_close(out[keep], expected[keep], **TOL)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_encoder_layer_with_rms_norm_matches_torch_with_rms_norm(norm_first):
    torch.manual_seed(2)
    theirs = nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF, **_torch_layer_args("relu", norm_first))
    theirs.norm1, theirs.norm2 = nn.RMSNorm(D_MODEL, eps=1e-5), nn.RMSNorm(D_MODEL, eps=1e-5)
    perturb_(theirs)
    ours = EncoderLayer(D_MODEL, N_HEADS, D_FF, norm="rms", **_layer_args("relu", norm_first))
    copy_layer(theirs, ours)
    x = torch.randn(2, 5, D_MODEL)
    keep = _keep([5, 4], 5)
    assert_close(ours(x, keep=keep)[keep], theirs(x, src_key_padding_mask=~keep)[keep], **TOL)


@norm_first_param
@activation_param
@pytest.mark.parametrize("padding", [False, True], ids=["no_pad", "pad"])
def test_encoder_stack_matches_torch(norm_first, activation, padding):
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF, **_torch_layer_args(activation, norm_first))
    # torch's `norm` after the last layer is what a pre-norm stack needs: our final_norm.
    theirs = nn.TransformerEncoder(
        layer, num_layers=2, norm=nn.LayerNorm(D_MODEL) if norm_first else None, enable_nested_tensor=False
    )
    perturb_(theirs)
    ours = Encoder(D_MODEL, N_HEADS, D_FF, 2, **_layer_args(activation, norm_first))
    assert (ours.final_norm is not None) == norm_first
    copy_stack(theirs, ours)
    x = torch.randn(2, 5, D_MODEL)
    keep = _keep([5, 2], 5) if padding else torch.ones(2, 5, dtype=torch.bool)
    out = ours(x, keep=keep if padding else None)
    expected = theirs(x, src_key_padding_mask=~keep if padding else None)
    assert_close(out[keep], expected[keep], **TOL)


@norm_first_param
@activation_param
@pytest.mark.parametrize("padding", [False, True], ids=["no_pad", "pad"])
def test_decoder_stack_matches_torch(norm_first, activation, padding):
    torch.manual_seed(4)
    layer = nn.TransformerDecoderLayer(D_MODEL, N_HEADS, D_FF, **_torch_layer_args(activation, norm_first))
    theirs = nn.TransformerDecoder(layer, num_layers=2, norm=nn.LayerNorm(D_MODEL) if norm_first else None)
    perturb_(theirs)
    ours = Decoder(D_MODEL, N_HEADS, D_FF, 2, **_layer_args(activation, norm_first))
    assert (ours.final_norm is not None) == norm_first
    copy_stack(theirs, ours)
    x, memory = torch.randn(2, 4, D_MODEL), torch.randn(2, 6, D_MODEL)
    keep = _keep([4, 3], 4) if padding else torch.ones(2, 4, dtype=torch.bool)
    memory_keep = _keep([6, 2], 6) if padding else None
    out = ours(x, memory, keep=keep if padding else None, memory_keep=memory_keep)
    expected = theirs(
        x,
        memory,
        tgt_mask=_blocked_causal(4),
        tgt_is_causal=True,
        tgt_key_padding_mask=~keep if padding else None,
        memory_key_padding_mask=None if memory_keep is None else ~memory_keep,
    )
    assert_close(out[keep], expected[keep], **TOL)


# ---------------------------------------------------------------- feed-forward


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "swiglu"])
def test_feed_forward_matches_manual(activation, bias):
    torch.manual_seed(5)
    ffn = FeedForward(D_MODEL, D_FF, activation=activation, bias=bias).eval()
    x = torch.randn(2, 3, D_MODEL)

    def linear(layer, h):
        return h @ layer.weight.T + (0 if layer.bias is None else layer.bias)

    up = linear(ffn.up_proj, x)
    if activation == "relu":
        hidden = up.clamp(min=0)
    elif activation == "gelu":  # the exact (erf) GELU, as torch's encoder layers use
        hidden = 0.5 * up * (1 + torch.erf(up / 2**0.5))
    elif activation == "gelu_tanh":  # GPT-2's approximation (Hendrycks & Gimpel 2016, eq. after 2)
        hidden = 0.5 * up * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (up + 0.044715 * up**3)))
    else:
        gate = linear(ffn.gate_proj, x)
        hidden = gate * torch.sigmoid(gate) * up
    assert (ffn.gate_proj is None) == (activation != "swiglu")
    assert (ffn.up_proj.bias is None) == (not bias)
    assert_close(ffn(x), linear(ffn.down_proj, hidden), **TOL)


def test_feed_forward_dropout_only_in_training():
    torch.manual_seed(6)
    ffn = FeedForward(D_MODEL, D_FF, dropout=0.5)
    x = torch.randn(2, 3, D_MODEL)
    reference = ffn.eval()(x)
    assert_close(ffn(x), reference, atol=0, rtol=0)
    assert not torch.allclose(ffn.train()(x), reference, atol=1e-3)


def test_feed_forward_bad_activation_raises():
    with pytest.raises(ValueError, match="activation"):
        FeedForward(D_MODEL, D_FF, activation="tanh")


# ---------------------------------------------------------------- norms


def _batch_norm_pair() -> tuple[MaskedBatchNorm, nn.BatchNorm1d]:
    ours, theirs = MaskedBatchNorm(D_MODEL), nn.BatchNorm1d(D_MODEL, eps=1e-5, momentum=0.1)
    perturb_(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=False)  # torch also has num_batches_tracked
    return ours, theirs


@pytest.mark.parametrize("with_keep", [True, False], ids=["keep", "no_keep"])
def test_masked_batch_norm_training_matches_batch_norm_on_real_tokens(with_keep):
    torch.manual_seed(7)
    ours, theirs = _batch_norm_pair()
    keep = _keep([5, 2, 4], 5) if with_keep else torch.ones(3, 5, dtype=torch.bool)
    for step in range(2):  # running estimates after one and after two updates
        x = torch.randn(3, 5, D_MODEL) * 2 + 0.5 + step
        out = ours(x, keep if with_keep else None)
        assert_close(out[keep], theirs(x[keep]), **TOL)
        assert_close(ours.running_mean, theirs.running_mean, **TOL)
        assert_close(ours.running_var, theirs.running_var, **TOL)


def test_masked_batch_norm_ignores_padded_values():
    torch.manual_seed(8)
    keep = _keep([5, 2, 4], 5)
    x = torch.randn(3, 5, D_MODEL)
    x_other = x.clone()
    x_other[~keep] = torch.randn_like(x_other[~keep]) * 100 + 7
    first = perturb_(MaskedBatchNorm(D_MODEL))
    second = MaskedBatchNorm(D_MODEL)
    second.load_state_dict(first.state_dict())
    out, out_other = first(x, keep), second(x_other, keep)
    assert_close(out[keep], out_other[keep], atol=0, rtol=0)
    assert_close(first.running_mean, second.running_mean, atol=0, rtol=0)
    assert_close(first.running_var, second.running_var, atol=0, rtol=0)


def test_masked_batch_norm_eval_uses_running_stats():
    torch.manual_seed(9)
    ours, theirs = _batch_norm_pair()
    with torch.no_grad():
        for norm in (ours, theirs):
            norm.running_mean.copy_(torch.linspace(-1, 1, D_MODEL))
            norm.running_var.copy_(torch.linspace(0.5, 2, D_MODEL))
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, D_MODEL)
    keep = _keep([3, 1], 3)
    expected = (x - ours.running_mean) / torch.sqrt(ours.running_var + 1e-5) * ours.weight + ours.bias
    assert_close(ours(x, keep), expected, **TOL)
    assert_close(ours(x), theirs(x.reshape(-1, D_MODEL)).reshape(2, 3, D_MODEL), **TOL)
    assert_close(ours.running_mean, torch.linspace(-1, 1, D_MODEL), atol=0, rtol=0)  # not updated


def test_masked_batch_norm_needs_two_real_tokens_in_training():
    torch.manual_seed(11)
    with pytest.raises(ValueError, match="two real tokens"):
        MaskedBatchNorm(D_MODEL)(torch.randn(2, 3, D_MODEL), _keep([1, 0], 3))


def test_rms_and_layer_norm_accept_keep_and_match_torch():
    torch.manual_seed(10)
    x = torch.randn(2, 3, D_MODEL) * 3 + 1
    keep = _keep([3, 1], 3)
    rms, layer = perturb_(RMSNorm(D_MODEL, eps=1e-5)), perturb_(LayerNorm(D_MODEL, eps=1e-5))

    expected_rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * rms.weight
    torch_rms = nn.RMSNorm(D_MODEL, eps=1e-5)
    torch_rms.load_state_dict(rms.state_dict())
    for out in (rms(x), rms(x, keep), torch_rms(x)):
        assert_close(out, expected_rms, **TOL)

    expected_layer = F.layer_norm(x, (D_MODEL,), layer.weight, layer.bias, eps=1e-5)
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    by_hand = (x - mean) / torch.sqrt(var + 1e-5) * layer.weight + layer.bias
    for out in (layer(x), layer(x, keep), by_hand):
        assert_close(out, expected_layer, **TOL)


def test_make_norm():
    assert isinstance(make_norm("layer", D_MODEL), LayerNorm)
    assert isinstance(make_norm("rms", D_MODEL), RMSNorm)
    assert isinstance(make_norm("batch", D_MODEL), MaskedBatchNorm)
    assert make_norm("rms", D_MODEL, eps=1e-3).eps == 1e-3
    with pytest.raises(ValueError, match="norm"):
        make_norm("group", D_MODEL)
