"""`attnkit.nn.packed`: linear layers on oneDNN-packed weights compute what `nn.Linear` computes, keep
the model's parameters (names, tying, gradients), and step aside wherever the packed product cannot
apply."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attnkit.decode import CausalLMStepper, beam_search, greedy_decode
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.nn import KVCache, StaticKVCache, packed
from attnkit.nn.packed import PackedLinear, pack_linear_layers, packing_available
from attnkit.precision import to_precision

pytestmark = pytest.mark.skipif(not packing_available(), reason="this PyTorch build has no oneDNN linear kernels")


@pytest.fixture(autouse=True)
def pack_every_size(monkeypatch):
    """The tests' layers are far below the size worth packing; pack them all the same."""
    monkeypatch.setattr(packed, "_MIN_ELEMENTS", 0)


def _pair(bias: bool = True, n_in: int = 24, n_out: int = 40) -> tuple[nn.Linear, PackedLinear]:
    torch.manual_seed(0)
    linear = nn.Linear(n_in, n_out, bias=bias)
    return linear, PackedLinear.from_linear(linear)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 24), (7, 24), (3, 5, 24), (2, 0, 24)])
def test_packed_layer_equals_linear(shape, bias):
    linear, layer = _pair(bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        want, got = linear(x), layer(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_packed_product_is_what_runs_when_inferring(monkeypatch):
    _, layer = _pair()
    calls = []
    product = packed._product

    def counting(x, weight, bias):
        calls.append(x.shape)
        return product(x, weight, bias)

    monkeypatch.setattr(packed, "_product", counting)
    with torch.inference_mode():
        layer(torch.randn(2, 24))
    with torch.no_grad():
        layer(torch.randn(3, 24))
    layer(torch.randn(4, 24))  # gradients recorded for the weight: plain F.linear
    assert calls == [torch.Size([2, 24]), torch.Size([3, 24])]


def test_parameters_gradients_and_state_dict_are_the_linear_layers():
    linear, layer = _pair()
    assert layer.weight is linear.weight and layer.bias is linear.bias
    assert list(layer.state_dict()) == ["weight", "bias"]
    x = torch.randn(5, 24, requires_grad=True)
    layer(x).square().sum().backward()
    grads = (x.grad.clone(), linear.weight.grad.clone(), linear.bias.grad.clone())
    x.grad = linear.weight.grad = linear.bias.grad = None
    linear(x).square().sum().backward()
    for got, want in zip(grads, (x.grad, linear.weight.grad, linear.bias.grad), strict=True):
        torch.testing.assert_close(got, want)


def test_a_changed_weight_is_repacked():
    linear, layer = _pair()
    x = torch.randn(3, 24)
    with torch.no_grad():
        layer(x)
        linear.weight.mul_(-2.0)  # in place, as an optimizer step
        torch.testing.assert_close(layer(x), linear(x), atol=1e-5, rtol=1e-5)
        layer.weight = nn.Parameter(torch.randn(40, 24))  # replaced
        torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)


def test_other_dtypes_fall_back_to_the_plain_product():
    _, layer = _pair()
    layer.to(torch.bfloat16)
    x = torch.randn(3, 24, dtype=torch.bfloat16)
    with torch.inference_mode():
        got = layer(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, nn.functional.linear(x, layer.weight, layer.bias))


def _gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=31, max_len=32, d_model=32, n_heads=4, n_layers=2)).eval()


def test_packing_a_model_keeps_tying_and_names_and_its_outputs():
    model = _gpt()
    names = list(model.state_dict())
    ids = torch.randint(0, 31, (3, 9))
    with torch.inference_mode():
        want = model(ids)
    count = pack_linear_layers(model)
    assert count == sum(1 for m in model.modules() if isinstance(m, nn.Linear))
    assert all(type(m) is not nn.Linear for m in model.modules())
    assert model.lm_head.weight is model.tok_embed.weight
    assert list(model.state_dict()) == names
    with torch.inference_mode():
        torch.testing.assert_close(model(ids), want, atol=1e-5, rtol=1e-5)
    assert pack_linear_layers(model) == 0  # already packed


def test_decoding_on_a_packed_model_gives_the_same_tokens():
    model = _gpt()
    prompt = torch.randint(0, 31, (2, 4))
    greedy = greedy_decode(CausalLMStepper(model), prompt, eos_id=None, max_new_tokens=10, pad_id=None)
    beam = beam_search(CausalLMStepper(model), prompt, beam_size=3, eos_id=1, max_new_tokens=10)
    to_precision(model, "fp32")  # fuses q/k/v and packs
    assert any(isinstance(m, PackedLinear) for m in model.modules())
    again = greedy_decode(CausalLMStepper(model), prompt, eos_id=None, max_new_tokens=10, pad_id=None)
    assert torch.equal(again, greedy)
    again = beam_search(CausalLMStepper(model), prompt, beam_size=3, eos_id=1, max_new_tokens=10)
    assert torch.equal(again.tokens, beam.tokens)
    torch.testing.assert_close(again.scores, beam.scores, atol=1e-4, rtol=1e-4)


def test_compiled_one_row_products_are_a_reduction_and_exports_keep_linear(monkeypatch):
    linear, layer = _pair()
    rows = []
    product = packed._row_product

    def counting(x, weight, bias):
        rows.append(tuple(x.shape))
        return product(x, weight, bias)

    monkeypatch.setattr(packed, "_row_product", counting)
    traced = torch.compile(lambda x: layer(x), backend="eager", dynamic=False)  # Dynamo's tracing only
    with torch.inference_mode():
        for shape in [(1, 24), (1, 1, 24), (5, 24)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(traced(x), linear(x), atol=1e-5, rtol=1e-5)
        graph = torch.export.export(layer, (torch.randn(1, 24),)).graph
    assert rows == [(1, 24), (1, 1, 24)]  # one row only; five rows stay a matrix product
    assert "linear" in str(graph) and "sum" not in str(graph)  # an exported graph keeps nn.Linear's op


def test_compiled_decoding_on_a_packed_model_gives_the_same_tokens():
    model = _gpt()
    to_precision(model, "fp32")
    prompt = torch.randint(0, 31, (1, 4))
    want = greedy_decode(CausalLMStepper(model), prompt, eos_id=None, max_new_tokens=8, pad_id=None)
    got = greedy_decode(CausalLMStepper(model, compile=True), prompt, eos_id=None, max_new_tokens=8, pad_id=None)
    assert torch.equal(got, want)
    tokens = torch.cat([prompt, want], dim=1)
    eager, compiled = CausalLMStepper(model), CausalLMStepper(model, compile=True)
    for stepper in (eager, compiled):
        stepper.step(tokens[:, :-1])  # the prompt's pass runs uncompiled
    torch.testing.assert_close(compiled.step(tokens), eager.step(tokens), atol=1e-5, rtol=1e-5)
    assert all(isinstance(c, StaticKVCache) for c in compiled.cache)
    # Several rows on packed layers step uncompiled, on a growing cache (faster than a compiled graph's
    # plain matrix products), and give the same tokens.
    rows = torch.randint(0, 31, (2, 4))
    stepper = CausalLMStepper(model, compile=True)
    got = greedy_decode(stepper, rows, eos_id=None, max_new_tokens=8, pad_id=None)
    assert all(isinstance(c, KVCache) for c in stepper.cache)
    assert torch.equal(got, greedy_decode(CausalLMStepper(model), rows, eos_id=None, max_new_tokens=8, pad_id=None))


def test_a_copy_is_plain_and_quantizes():
    model = _gpt()
    pack_linear_layers(model)
    twin = copy.deepcopy(model)
    assert not any(isinstance(m, PackedLinear) for m in twin.modules())
    assert twin.lm_head.weight is twin.tok_embed.weight
    ids = torch.randint(0, 31, (2, 5))
    with torch.inference_mode():
        torch.testing.assert_close(twin(ids), model(ids), atol=1e-5, rtol=1e-5)
    int8 = to_precision(model, "int8")
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in int8.modules())


def test_small_layers_are_left_to_f_linear(monkeypatch):
    monkeypatch.setattr(packed, "_MIN_ELEMENTS", 32 * 32 * 4)
    model = _gpt()  # d_model 32: q/k/v fused (96 x 32) and the output layer stay, the feed-forward packs
    to_precision(model, "fp32")
    kinds = {name: type(m) for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert {n for n, k in kinds.items() if k is PackedLinear} == {n for n in kinds if ".ffn." in n}
    assert kinds["lm_head"] is nn.Linear


def test_nothing_is_packed_without_onednn(monkeypatch):
    monkeypatch.setattr(packed, "packing_available", lambda: False)
    model = _gpt()
    assert pack_linear_layers(model) == 0
    assert any(type(m) is nn.Linear for m in model.modules())
