"""GPT: causality, the KV cache against full recomputation, the tied output layer, rotary positions."""

from __future__ import annotations

import pytest
import torch

from attnkit.models.gpt import GPT, GPTConfig


def tiny(positional: str = "learned", **overrides) -> GPT:
    torch.manual_seed(0)
    fields = dict(vocab_size=23, max_len=16, d_model=32, n_heads=4, n_layers=2, positional=positional)
    fields.update(overrides)
    return GPT(GPTConfig(**fields)).double().eval()


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_causal_a_later_token_changes_nothing_before_it(positional):
    model = tiny(positional)
    ids = torch.randint(0, 23, (2, 10))
    changed = ids.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 23
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("capacity", [None, 12, 16], ids=["growing", "static_full", "static_spare"])
@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_cache_gives_the_logits_of_a_full_forward(positional, capacity):
    model = tiny(positional)
    ids = torch.randint(0, 23, (3, 12))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(capacity)
        steps = [model(ids[:, :5], cache=cache)]  # a prompt, then one token at a time
        steps += [model(ids[:, t : t + 1], cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    assert [c.length for c in cache] == [12, 12]


def test_static_cache_capacity_is_checked():
    model = tiny()
    for capacity in (0, 17):
        with pytest.raises(ValueError, match="capacity"):
            model.new_cache(capacity)


def test_output_layer_is_the_token_embedding():
    model = tiny()
    assert model.lm_head.weight is model.tok_embed.weight
    names = [name for name, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # counted once
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())


def test_context_is_enforced_and_configs_checked():
    model = tiny()
    with pytest.raises(ValueError, match="exceed the context"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="n_heads"):
        GPTConfig(vocab_size=5, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="even"):
        GPTConfig(vocab_size=5, d_model=12, n_heads=4, positional="rotary")


def test_residual_projections_start_smaller():
    model = tiny(n_layers=8)
    attention = model.blocks.layers[0].self_attn
    out_std, q_std = attention.out_proj.weight.std().item(), attention.q_proj.weight.std().item()
    assert out_std < 0.5 * q_std  # GPT-2: 0.02 / sqrt(2 * 8) = 0.005 against 0.02


def test_gelu_tanh_is_gpt2s_activation_and_others_are_refused():
    torch.manual_seed(3)
    exact = GPT(GPTConfig(vocab_size=11, max_len=8, d_model=16, n_heads=2, n_layers=1))
    approx = GPT(GPTConfig(vocab_size=11, max_len=8, d_model=16, n_heads=2, n_layers=1, activation="gelu_tanh"))
    approx.load_state_dict(exact.state_dict())
    ids = torch.randint(0, 11, (2, 8))
    a, b = exact(ids), approx(ids)
    assert torch.allclose(a, b, atol=1e-3) and not torch.equal(a, b)  # close, but another function
    with pytest.raises(ValueError, match="gelu or gelu_tanh"):
        GPTConfig(vocab_size=11, activation="relu")
