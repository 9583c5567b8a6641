"""Properties of the full Transformer and its stacks on tiny configs: causality, padding invariance,
permutation equivariance, cache == no cache, tied weights, config, positions, no NaN."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch.testing import assert_close

from attnkit.nn import (
    Decoder,
    Encoder,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    Transformer,
    TransformerConfig,
    sinusoidal_table,
)

TOL = dict(atol=1e-5, rtol=1e-5)
VOCAB, PAD = 50, 0

norm_first_param = pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
norm_param = pytest.mark.parametrize("norm", ["layer", "rms", "batch"])
positional_param = pytest.mark.parametrize("positional", ["sinusoidal", "learned"])


def tiny_config(**overrides) -> TransformerConfig:
    fields = dict(
        src_vocab_size=VOCAB,
        d_model=32,
        n_heads=4,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=64,
        dropout=0.0,
        max_len=64,
    )
    return TransformerConfig(**{**fields, **overrides})


def tiny_model(**overrides) -> Transformer:
    model = Transformer(tiny_config(**overrides))
    if model.config.norm == "batch":
        # Fresh running statistics (mean 0, var 1) would make BatchNorm nearly the identity in eval.
        with torch.no_grad():
            for module in model.modules():
                if hasattr(module, "running_mean"):
                    module.running_mean.normal_(0, 0.3)
                    module.running_var.uniform_(0.5, 2.0)
    return model


def ids(batch: int, length: int, lengths: list[int] | None = None) -> torch.Tensor:
    """Random non-pad ids (B, L), right-padded to `lengths` when given."""
    out = torch.randint(1, VOCAB, (batch, length))
    if lengths is not None:
        out[torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]] = PAD
    return out


def pad_right(x: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([x, torch.full((x.size(0), extra), PAD)], dim=1)


def layer_stack(kind: str, norm: str, norm_first: bool, **kwargs):
    cls = Encoder if kind == "encoder" else Decoder
    return cls(16, 4, 32, 2, dropout=0.0, norm=norm, norm_first=norm_first, **kwargs)


# ---------------------------------------------------------------- causality


@norm_first_param
@norm_param
@positional_param
def test_changing_later_targets_leaves_earlier_logits_unchanged(norm_first, norm, positional):
    torch.manual_seed(0)
    # eval: in training BatchNorm's statistics mix all target positions, which is not causal by design.
    model = tiny_model(norm_first=norm_first, norm=norm, positional=positional).eval()
    batch, length = 2, 6
    src, tgt = ids(batch, 5, [5, 3]), ids(batch, length)
    # Variant t changes every target token after position t (to another non-pad id); all variants
    # go through the model as one batch, whose rows are independent.
    variants = [tgt]
    for t in range(length - 1):
        changed = tgt.clone()
        changed[:, t + 1 :] = tgt[:, t + 1 :] % (VOCAB - 1) + 1
        assert (changed[:, t + 1 :] != tgt[:, t + 1 :]).all() and (changed != PAD).all()
        variants.append(changed)
    logits = model(src.repeat(length, 1), torch.cat(variants)).view(length, batch, length, VOCAB)
    for t in range(length - 1):
        assert_close(logits[t + 1, :, : t + 1], logits[0, :, : t + 1], **TOL)
        assert not torch.allclose(logits[t + 1, :, t + 1], logits[0, :, t + 1], atol=1e-4)


# ---------------------------------------------------------------- padding invariance

# These run in training mode (dropout is 0.0): BatchNorm then uses batch statistics, which must be
# computed from real tokens only for the invariances to hold.


@norm_first_param
@norm_param
def test_extra_source_padding_changes_nothing(norm_first, norm):
    torch.manual_seed(1)
    model = tiny_model(norm_first=norm_first, norm=norm).train()
    src, tgt = ids(2, 5, [5, 3]), ids(2, 4)
    assert_close(model(pad_right(src, 3), tgt), model(src, tgt), **TOL)


@norm_first_param
@norm_param
def test_extra_target_padding_changes_nothing_at_real_positions(norm_first, norm):
    torch.manual_seed(2)
    model = tiny_model(norm_first=norm_first, norm=norm).train()
    src, tgt = ids(2, 5, [5, 3]), ids(2, 4, [4, 2])
    keep = tgt != PAD
    logits, padded = model(src, tgt), model(src, pad_right(tgt, 3))
    assert_close(padded[:, :4][keep], logits[keep], **TOL)


@norm_first_param
@norm_param
def test_encoder_ignores_values_at_padded_positions(norm_first, norm):
    torch.manual_seed(3)
    encoder = layer_stack("encoder", norm, norm_first).train()
    x = torch.randn(3, 6, 16)
    keep = torch.arange(6)[None, :] < torch.tensor([6, 3, 1])[:, None]
    other = x.clone()
    other[~keep] = torch.randn_like(other[~keep]) * 10
    assert_close(encoder(other, keep=keep)[keep], encoder(x, keep=keep)[keep], **TOL)


@norm_first_param
@norm_param
def test_decoder_ignores_values_at_padded_target_and_memory_positions(norm_first, norm):
    torch.manual_seed(4)
    decoder = layer_stack("decoder", norm, norm_first).train()
    x, memory = torch.randn(2, 4, 16), torch.randn(2, 5, 16)
    keep = torch.arange(4)[None, :] < torch.tensor([4, 2])[:, None]
    memory_keep = torch.arange(5)[None, :] < torch.tensor([3, 5])[:, None]
    other_x, other_memory = x.clone(), memory.clone()
    other_x[~keep] = torch.randn_like(other_x[~keep]) * 10
    other_memory[~memory_keep] = torch.randn_like(other_memory[~memory_keep]) * 10
    out = decoder(x, memory, keep=keep, memory_keep=memory_keep)
    other = decoder(other_x, other_memory, keep=keep, memory_keep=memory_keep)
    assert_close(other[keep], out[keep], **TOL)


# ---------------------------------------------------------------- permutation equivariance


@norm_first_param
@norm_param
@pytest.mark.parametrize("padding", [False, True], ids=["no_pad", "pad"])
def test_encoder_without_positions_is_permutation_equivariant(norm_first, norm, padding):
    torch.manual_seed(5)
    encoder = layer_stack("encoder", norm, norm_first).train()
    x = torch.randn(2, 6, 16)
    keep = torch.arange(6)[None, :] < torch.tensor([6, 4])[:, None] if padding else None
    perm = torch.randperm(6)
    assert not torch.equal(perm, torch.arange(6))
    out = encoder(x, keep=keep)
    permuted = encoder(x[:, perm], keep=None if keep is None else keep[:, perm])
    if keep is None:
        assert_close(permuted, out[:, perm], **TOL)
    else:
        assert_close(permuted[keep[:, perm]], out[:, perm][keep[:, perm]], **TOL)


# ---------------------------------------------------------------- KV cache


@norm_first_param
@norm_param
@positional_param
def test_cached_decoding_matches_full_decode(norm_first, norm, positional):
    torch.manual_seed(6)
    # eval: a cached step sees only its own tokens, so BatchNorm must use running statistics.
    model = tiny_model(norm_first=norm_first, norm=norm, positional=positional).eval()
    chunks = [1, 2, 1, 3]  # single steps and several tokens at once
    src, tgt = ids(2, 7, [7, 4]), ids(2, sum(chunks))
    src_keep = src != PAD
    memory = model.encode(src)
    full = model.decode(tgt, memory, src_keep)

    cache, steps, start = model.new_cache(), [], 0
    for size in chunks:
        steps.append(model.decode(tgt[:, start : start + size], memory, src_keep, cache=cache))
        start += size
        assert cache.length == start == cache.self_attn[0].length
        assert all(c.length == 7 for c in cache.cross_attn)
    assert_close(torch.cat(steps, dim=1), full, **TOL)


@pytest.mark.parametrize("n_decoder_layers", [0, 1])
def test_cached_decoding_positions_with_few_decoder_layers(n_decoder_layers):
    """Positions come from the cache's length, which must count steps even with no decoder layer."""
    torch.manual_seed(7)
    model = tiny_model(n_decoder_layers=n_decoder_layers).eval()
    src, tgt = ids(2, 5, [5, 2]), ids(2, 4)
    memory = model.encode(src)
    full = model.decode(tgt, memory, src != PAD)
    cache = model.new_cache()
    steps = [model.decode(tgt[:, t : t + 1], memory, src != PAD, cache=cache) for t in range(4)]
    assert cache.length == 4
    assert_close(torch.cat(steps, dim=1), full, **TOL)


def test_decoder_cache_reorder_follows_selected_rows():
    torch.manual_seed(8)
    model = tiny_model().eval()
    src, tgt = ids(3, 6, [6, 3, 5]), ids(3, 5)
    src_keep = src != PAD
    memory = model.encode(src)
    cache = model.new_cache()
    model.decode(tgt[:, :3], memory, src_keep, cache=cache)

    index = torch.tensor([2, 0, 0])  # as a beam search does: drop row 1, duplicate row 0
    cache.reorder(index)
    assert cache.length == 3
    for layer_cache in (*cache.self_attn, *cache.cross_attn):
        assert layer_cache.k.size(0) == 3
    rest = model.decode(tgt[index, 3:], memory[index], src_keep[index], cache=cache)
    full = model.decode(tgt[index], memory[index], src_keep[index])
    assert_close(rest, full[:, 3:], **TOL)


@norm_first_param
@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize("rope", [False, True], ids=["no_rope", "rope"])
def test_gpt_style_encoder_cache_matches_full_causal_forward(norm_first, norm, rope):
    torch.manual_seed(9)
    encoder = layer_stack("encoder", norm, norm_first, rope=RotaryEmbedding(4, max_len=16) if rope else None)
    x = torch.randn(2, 6, 16)
    full = encoder(x, causal=True)
    cache, steps = encoder.new_cache(), []
    for start, size in ((0, 1), (1, 2), (3, 1), (4, 2)):
        steps.append(encoder(x[:, start : start + size], causal=True, cache=cache))
    assert [c.length for c in cache] == [6, 6]
    assert_close(torch.cat(steps, dim=1), full, **TOL)
    with pytest.raises(ValueError, match="cache"):
        encoder(x, causal=True, cache=cache[:1])


# ---------------------------------------------------------------- tied weights and parameter count


def expected_num_parameters(config: TransformerConfig) -> int:
    """Count from the architecture, by hand."""
    d, d_ff = config.d_model, config.d_ff
    src_vocab = config.src_vocab_size
    tgt_vocab = config.tgt_vocab_size or src_vocab
    norm = d if config.norm == "rms" else 2 * d
    attention = 4 * (d * d + d)
    ffn = 2 * d * d_ff + d_ff + d + (d * d_ff + d_ff if config.activation == "swiglu" else 0)
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    total = config.n_encoder_layers * encoder_layer + config.n_decoder_layers * decoder_layer
    total += 2 * norm if config.norm_first else 0  # final norms of both stacks
    total += 2 * config.max_len * d if config.positional == "learned" else 0
    if config.tie_embeddings:
        total += tgt_vocab * d if config.shared_vocab else (src_vocab + tgt_vocab) * d
    else:
        total += (src_vocab + 2 * tgt_vocab) * d
    return total


def test_shared_vocabulary_ties_all_three_matrices():
    torch.manual_seed(10)
    model = tiny_model()
    assert model.src_embed.weight is model.tgt_embed.weight
    assert model.tgt_embed.weight is model.lm_head.weight
    assert model.num_parameters() == expected_num_parameters(model.config)
    untied = tiny_model(tie_embeddings=False)
    assert untied.num_parameters() - model.num_parameters() == 2 * VOCAB * 32


def test_separate_target_vocabulary_ties_target_embedding_and_head_only():
    torch.manual_seed(11)
    model = tiny_model(tgt_vocab_size=40)
    assert model.tgt_embed.weight is model.lm_head.weight
    assert model.src_embed.weight is not model.tgt_embed.weight
    assert model.src_embed.weight.shape == (VOCAB, 32) and model.lm_head.weight.shape == (40, 32)
    assert model(ids(1, 3), torch.randint(1, 40, (1, 2))).shape == (1, 2, 40)
    assert model.num_parameters() == expected_num_parameters(model.config)


@pytest.mark.parametrize("tgt_vocab_size", [None, 40])
def test_untied_embeddings_are_three_parameters(tgt_vocab_size):
    torch.manual_seed(12)
    model = tiny_model(tie_embeddings=False, tgt_vocab_size=tgt_vocab_size)
    weights = (model.src_embed.weight, model.tgt_embed.weight, model.lm_head.weight)
    assert len({id(w) for w in weights}) == 3
    assert model.num_parameters() == expected_num_parameters(model.config)


@pytest.mark.parametrize(
    "overrides",
    [dict(norm="rms", norm_first=True), dict(positional="learned", activation="swiglu"), dict(norm="batch")],
    ids=["rms_pre_norm", "learned_swiglu", "batch"],
)
def test_num_parameters_matches_count_by_hand(overrides):
    torch.manual_seed(13)
    model = tiny_model(**overrides)
    assert model.num_parameters() == expected_num_parameters(model.config)


# ---------------------------------------------------------------- config


def test_default_config_is_the_papers_base_model():
    config = TransformerConfig()
    assert (config.d_model, config.n_heads, config.n_encoder_layers, config.n_decoder_layers) == (
        512,
        8,
        6,
        6,
    )
    assert (config.d_ff, config.dropout, config.attention_dropout) == (2048, 0.1, 0.0)
    assert config.norm_first is False
    assert (config.positional, config.activation, config.norm) == ("sinusoidal", "relu", "layer")
    assert config.tie_embeddings is True and config.scale_embeddings is True
    assert config.tgt_vocab_size is None and config.shared_vocab and config.pad_id == 0
    assert expected_num_parameters(config) == 63_082_496
    # The structure on the meta device: same modules and shapes, no 250 MB of memory.
    with torch.device("meta"):
        model = Transformer(config)
    assert model.num_parameters() == 63_082_496


def test_config_round_trips_through_dict_and_json():
    config = tiny_config(tgt_vocab_size=40, norm_first=True, norm="rms", positional="learned")
    data = config.to_dict()
    assert data["tgt_vocab_size"] == 40 and data["norm"] == "rms"
    assert TransformerConfig.from_dict(data) == config
    assert TransformerConfig.from_dict(json.loads(json.dumps(data))) == config


def test_config_from_dict_rejects_unknown_keys():
    data = {**tiny_config().to_dict(), "n_layers": 3}
    with pytest.raises(ValueError, match="n_layers"):
        TransformerConfig.from_dict(data)


def test_config_is_frozen_and_keyword_only():
    config = tiny_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.d_model = 64
    with pytest.raises(TypeError):
        TransformerConfig(50)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(n_heads=3),
        dict(n_heads=0),
        dict(d_model=0),
        dict(dropout=1.0),
        dict(dropout=-0.1),
        dict(attention_dropout=1.0),
        dict(pad_id=VOCAB),
        dict(pad_id=-1),
        dict(tgt_vocab_size=5, pad_id=7),
        dict(tgt_vocab_size=0),
        dict(n_encoder_layers=-1),
        dict(max_len=0),
        dict(positional="rotary"),
        dict(norm="group"),
        dict(activation="tanh"),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_invalid_config_raises(overrides):
    with pytest.raises(ValueError):
        tiny_config(**overrides)


# ---------------------------------------------------------------- embeddings and positions


def test_embeddings_are_scaled_by_sqrt_d_model():
    torch.manual_seed(14)
    config = tiny_config(n_encoder_layers=0, n_decoder_layers=0)  # post-norm, so no final norm either
    scaled = Transformer(config).eval()
    unscaled = Transformer(dataclasses.replace(config, scale_embeddings=False)).eval()
    unscaled.load_state_dict(scaled.state_dict())
    src = ids(2, 5, [5, 3])
    table = sinusoidal_table(64, 32)[:5]
    embedded = scaled.src_embed.weight[src]  # (B, S, D)
    assert_close(scaled.encode(src), embedded * math.sqrt(32) + table, **TOL)
    assert_close(unscaled.encode(src), embedded + table, **TOL)
    assert_close(scaled.encode(src) - table, math.sqrt(32) * (unscaled.encode(src) - table), **TOL)

    tgt = ids(2, 3)
    memory = scaled.encode(src)
    hidden = scaled.tgt_embed.weight[tgt] * math.sqrt(32) + table[:3]
    assert_close(scaled.decode(tgt, memory, src != PAD), hidden @ scaled.lm_head.weight.T, **TOL)


def test_sinusoidal_table_matches_the_papers_formula():
    d_model = 16
    table = sinusoidal_table(64, d_model)
    assert table.shape == (64, d_model) and table.dtype == torch.float32
    for pos in (0, 1, 7, 63):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert abs(table[pos, 2 * i].item() - math.sin(angle)) < 1e-6
            assert abs(table[pos, 2 * i + 1].item() - math.cos(angle)) < 1e-6
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(8, 7)


def test_positional_modules_with_offset_add_the_table_slice():
    torch.manual_seed(15)
    x = torch.randn(2, 3, 16)
    sinusoidal = SinusoidalPositionalEncoding(16, max_len=10)
    assert_close(sinusoidal(x, offset=4), x + sinusoidal_table(10, 16)[4:7], atol=0, rtol=0)
    assert_close(sinusoidal(x), x + sinusoidal_table(10, 16)[:3], atol=0, rtol=0)
    learned = LearnedPositionalEmbedding(10, 16)
    assert_close(learned(x, offset=4), x + learned.weight[4:7], atol=0, rtol=0)
    for module in (sinusoidal, learned):
        module(x, offset=7)  # positions 7..9: the last ones that fit
        with pytest.raises(ValueError, match="max_len"):
            module(x, offset=8)


def _rotate(rope: RotaryEmbedding, vector: torch.Tensor, position: int) -> torch.Tensor:
    return rope(vector.view(1, 1, 1, -1), offset=position).view(-1)


@pytest.mark.parametrize(("m", "n", "shift"), [(0, 3, 5), (2, 2, 10), (9, 1, 20), (4, 30, 33)])
def test_rope_dot_product_depends_only_on_the_offset(m, n, shift):
    torch.manual_seed(16)
    rope = RotaryEmbedding(8, max_len=64)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    dot = _rotate(rope, q, m) @ _rotate(rope, k, n)
    shifted = _rotate(rope, q, m + shift) @ _rotate(rope, k, n + shift)
    assert_close(shifted, dot, atol=1e-5, rtol=1e-5)
    if m != n:  # and it does depend on the offset
        assert not torch.allclose(dot, q @ k, atol=1e-3)


def test_rope_matches_rotation_formula_and_preserves_norms():
    torch.manual_seed(17)
    head_dim, half = 8, 4
    rope = RotaryEmbedding(head_dim, max_len=32)
    x = torch.randn(2, 3, 5, head_dim)
    rotated = rope(x, offset=6)
    assert_close(rotated.norm(dim=-1), x.norm(dim=-1), **TOL)
    expected = torch.empty_like(x)
    for t in range(5):
        pos = 6 + t
        for i in range(half):  # feature i pairs with feature i + D/2
            angle = pos * 10000 ** (-2 * i / head_dim)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[..., t, i], x[..., t, i + half]
            expected[..., t, i] = a * c - b * s
            expected[..., t, i + half] = b * c + a * s
    assert_close(rotated, expected, **TOL)
    assert_close(rope(x, offset=0)[..., 0, :], x[..., 0, :], atol=0, rtol=0)  # position 0: no rotation


def test_rope_errors():
    torch.manual_seed(19)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)
    rope = RotaryEmbedding(8, max_len=10)
    rope(torch.randn(1, 1, 3, 8), offset=7)
    with pytest.raises(ValueError, match="max_len"):
        rope(torch.randn(1, 1, 3, 8), offset=8)


def test_sequence_longer_than_max_len_raises():
    torch.manual_seed(20)
    model = tiny_model(max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        model(ids(1, 9), ids(1, 2))


# ---------------------------------------------------------------- fully padded sequences


@norm_first_param
@norm_param
def test_fully_padded_source_gives_no_nan(norm_first, norm):
    torch.manual_seed(18)
    model = tiny_model(norm_first=norm_first, norm=norm).train()
    src = ids(2, 5, [5, 0])  # the second source sequence is nothing but padding
    tgt = ids(2, 4)
    logits = model(src, tgt)
    assert torch.isfinite(logits).all()
    assert torch.isfinite(model.encode(src)).all()
    (logits * torch.randn_like(logits)).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
