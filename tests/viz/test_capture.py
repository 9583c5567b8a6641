"""capture_attention on every model kind, and the functions computed from its maps against hand computations."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from attnkit.decode import CausalLMStepper, Seq2SeqStepper, greedy_decode
from attnkit.models import (
    GPT,
    GPTConfig,
    MaskedLanguageModel,
    SASRec,
    SASRecConfig,
    TextClassifier,
    TextEncoderConfig,
    TransformerConfig,
    Translator,
    ViT,
    ViTConfig,
)
from attnkit.nn import MultiHeadAttention
from attnkit.viz import (
    alignment,
    attention_modules,
    capture_attention,
    entropy,
    first_token,
    gradient_rollout,
    head_summary,
    mass_on,
    pooled_row,
    rollout,
)

TEXT = TextEncoderConfig(vocab_size=30, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=12, dropout=0.0)


def _ids(batch: int, length: int, vocab: int, seed: int = 0, pad_from: list[int] | None = None) -> Tensor:
    ids = torch.randint(5, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    for row, start in enumerate(pad_from or []):
        ids[row, start:] = 0
    return ids


def _translator() -> Translator:
    """A 2 + 2-layer translator over 30 tokens (bos 2, eos 3), random weights from the current seed."""
    config = TransformerConfig(
        src_vocab_size=30,
        d_model=16,
        n_heads=2,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=32,
        dropout=0.0,
        max_len=20,
    )
    return Translator(config, bos_id=2, eos_id=3)


def _models():
    """(name, model, inputs, expected {module: (kind, T, S)}) for every model kind."""
    torch.manual_seed(0)
    ids = _ids(2, 7, 30, pad_from=[7, 4])
    translator = _translator()
    tgt = _ids(2, 5, 30, seed=1)
    gpt = GPT(GPTConfig(vocab_size=30, max_len=16, d_model=16, n_heads=2, n_layers=2, dropout=0.0))
    sasrec = SASRec(SASRecConfig(n_items=40, max_len=10, d_model=16, n_heads=2, n_layers=2, d_ff=16, dropout=0.0))
    history = _ids(2, 10, 41, seed=2)
    history[1, :6] = 0  # left-padded, as SASRec's histories are
    vit = ViT(
        ViTConfig(
            image_size=8,
            patch_size=4,
            in_channels=1,
            n_classes=3,
            d_model=16,
            n_heads=2,
            n_layers=2,
            d_ff=32,
            dropout=0.0,
        )
    )
    return [
        (
            "classifier",
            TextClassifier(TEXT, 3),
            (ids,),
            {f"body.encoder.layers.{i}.self_attn": ("self", 7, 7) for i in range(2)},
        ),
        (
            "mlm",
            MaskedLanguageModel(TEXT),
            (ids,),
            {f"body.encoder.layers.{i}.self_attn": ("self", 7, 7) for i in range(2)},
        ),
        (
            "translator",
            translator,
            (ids, tgt),
            {
                **{f"encoder.layers.{i}.self_attn": ("self", 7, 7) for i in range(2)},
                **{f"decoder.layers.{i}.self_attn": ("causal", 5, 5) for i in range(2)},
                **{f"decoder.layers.{i}.cross_attn": ("cross", 5, 7) for i in range(2)},
            },
        ),
        ("gpt", gpt, (ids.clamp_min(1),), {f"blocks.layers.{i}.self_attn": ("causal", 7, 7) for i in range(2)}),
        ("sasrec", sasrec, (history,), {f"blocks.layers.{i}.self_attn": ("causal", 10, 10) for i in range(2)}),
        ("vit", vit, (torch.randn(2, 1, 8, 8),), {f"encoder.layers.{i}.self_attn": ("self", 5, 5) for i in range(2)}),
    ]


MODELS = _models()


@pytest.mark.parametrize(("name", "model", "inputs", "expected"), MODELS, ids=[m[0] for m in MODELS])
def test_capture_records_every_attention_module(name, model, inputs, expected):
    model.eval()
    with torch.no_grad():
        fused = model(*inputs)
        hooks_before = [(m._forward_hooks.copy(), m._forward_pre_hooks.copy()) for _, m in attention_modules(model)]
        with capture_attention(model) as captured:
            inside = model(*inputs)
    torch.testing.assert_close(inside, fused, atol=1e-5, rtol=1e-5)  # written-out path = fused path
    assert {m.module: (m.kind, m.weights.shape[-2], m.weights.shape[-1]) for m in captured} == expected
    for record in captured:
        weights = record.weights
        assert weights.shape[:2] == (inputs[0].size(0), 2)
        assert record.layer == int(record.module.split(".")[-2])
        sums = weights.sum(dim=-1)  # (B, H, T): 1, or 0 for a query with nothing to attend to
        assert torch.all((sums - 1).abs() < 1e-5) or torch.all(((sums - 1).abs() < 1e-5) | (sums == 0))
        if record.kind == "causal":
            assert torch.all(weights.triu(diagonal=1) == 0)
    for _, module in attention_modules(model):  # nothing left behind
        assert "_attend" not in module.__dict__
    assert [(m._forward_hooks, m._forward_pre_hooks) for _, m in attention_modules(model)] == hooks_before


@pytest.mark.parametrize(("name", "model", "inputs", "expected"), MODELS, ids=[m[0] for m in MODELS])
def test_reference_rows_run_fused_and_the_rest_is_captured_as_alone(name, model, inputs, expected):
    """With reference_rows=1 the first row takes the fused path unrecorded: every output row equals the
    uncaptured model's, and the maps are those of the other rows captured on their own."""
    model.eval()
    flipped = tuple(x.flip(0) for x in inputs)  # row 0 (unpadded where padding varies) as the reference
    with torch.no_grad():
        want = model(*flipped)
        with capture_attention(model) as alone:
            model(*(x[1:] for x in flipped))
        with capture_attention(model, keep_qkv=True, reference_rows=1) as captured:
            got = model(*flipped)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert [m.module for m in captured] == [m.module for m in alone]
    for record, single in zip(captured, alone, strict=True):
        assert record.weights.shape[0] == flipped[0].size(0) - 1 == record.q[0].size(0)
        torch.testing.assert_close(record.weights, single.weights, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="reference_rows=2 leaves none"), capture_attention(model, reference_rows=2):
        model(*(x[:2] for x in flipped))


def test_reference_rows_keep_the_captured_rows_gradients():
    model = TextClassifier(TEXT, 3).eval().requires_grad_(False)
    ids = _ids(1, 6, 30)

    def grads(batch: Tensor, reference: int) -> list[Tensor]:
        with capture_attention(model, keep_grad=True, reference_rows=reference) as captured:
            logits = model(batch)
            logits[-1, 1].backward()
        return [captured[f"body.encoder.layers.{i}.self_attn"].calls[0].grad for i in range(2)]

    for got, want in zip(grads(torch.cat([ids, ids]), 1), grads(ids, 0), strict=True):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_padding_gets_no_weight_and_fully_masked_rows_are_zero():
    model = TextClassifier(TEXT, 3).eval()
    ids = _ids(2, 7, 30, pad_from=[7, 4])
    with torch.no_grad(), capture_attention(model) as captured:
        model(ids)
    weights = captured["body.encoder.layers.0.self_attn"].weights  # (B, H, T, S)
    assert torch.all(weights[1, :, :, 4:] == 0)  # no query looks at padding
    assert torch.allclose(weights[1, :, :4].sum(dim=-1), torch.ones(2, 4))


def test_keep_qkv_reproduces_the_weights_step_by_step():
    model = TextClassifier(TEXT, 3).eval()
    ids = _ids(1, 6, 30)
    name = "body.encoder.layers.1.self_attn"
    with torch.no_grad(), capture_attention(model, keep_qkv=[name]) as captured:
        model(ids)
    record = captured[name]
    q, k = record.q[0], record.k[0]  # (1, H, T, Dh)
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5
    torch.testing.assert_close(scores.softmax(dim=-1), record.weights)
    assert captured["body.encoder.layers.0.self_attn"].q == []
    with (
        pytest.raises(ValueError, match="keep_qkv names no attention module"),
        capture_attention(model, keep_qkv=["x"]),
    ):
        pass


def test_modules_are_restored_after_an_error_and_nested_captures_both_record():
    model = TextClassifier(TEXT, 3).eval()
    ids = _ids(1, 5, 30)
    with pytest.raises(RuntimeError), capture_attention(model):
        raise RuntimeError("boom")
    assert all("_attend" not in m.__dict__ for _, m in attention_modules(model))
    with torch.no_grad(), capture_attention(model) as outer, capture_attention(model) as inner:
        model(ids)
    assert len(outer) == len(inner) == 2
    torch.testing.assert_close(
        outer["body.encoder.layers.0.self_attn"].weights, inner["body.encoder.layers.0.self_attn"].weights
    )
    assert all("_attend" not in m.__dict__ for _, m in attention_modules(model))
    with pytest.raises(ValueError, match="no MultiHeadAttention"), capture_attention(torch.nn.Linear(2, 2)):
        pass


def test_captured_cached_gpt_decoding_equals_one_forward_over_the_sequence():
    torch.manual_seed(1)
    gpt = GPT(GPTConfig(vocab_size=30, max_len=24, d_model=16, n_heads=2, n_layers=2, dropout=0.0)).eval()
    prompt = _ids(2, 4, 30, seed=3)
    with capture_attention(gpt) as captured:
        tokens = greedy_decode(CausalLMStepper(gpt), prompt, eos_id=None, max_new_tokens=6, pad_id=None)
    sequence = torch.cat([prompt, tokens[:, :-1]], dim=1)  # every token the model was fed
    with torch.no_grad(), capture_attention(gpt) as full:
        gpt(sequence)
    for record in captured:
        assert len(record.calls) == 6  # the prompt, then one call per new token fed back
        torch.testing.assert_close(record.weights, full[record.module].weights, atol=1e-6, rtol=1e-5)


def test_captured_cached_translation_equals_one_teacher_forced_forward():
    torch.manual_seed(2)
    model = _translator().eval()
    src = _ids(2, 6, 30, seed=4, pad_from=[6, 3])
    bos = torch.full((2,), 2)
    with capture_attention(model) as captured:
        tokens = greedy_decode(Seq2SeqStepper(model, src), bos, eos_id=None, max_new_tokens=5, pad_id=None)
    tgt_in = torch.cat([bos[:, None], tokens[:, :-1]], dim=1)
    with torch.no_grad(), capture_attention(model) as full:
        model(src, tgt_in)
    assert {m.module for m in captured} == {m.module for m in full}
    for record in captured:
        torch.testing.assert_close(record.weights, full[record.module].weights, atol=1e-6, rtol=1e-5)
    cross = captured["decoder.layers.1.cross_attn"].weights
    assert torch.all(cross[1, :, :, 3:] == 0)  # padded source positions get no weight


# ------------------------------------------------------------------------- the computed quantities


def _random_attention(batch: int, heads: int, length: int, seed: int) -> Tensor:
    return torch.randn(batch, heads, length, length, generator=torch.Generator().manual_seed(seed)).softmax(dim=-1)


def test_rollout_by_hand():
    layers = [_random_attention(1, 2, 3, seed) for seed in (0, 1)]
    expected = torch.eye(3)
    for a in layers:  # Abnar & Zuidema: 0.5 * mean over heads + 0.5 * I, rows renormalised, multiplied
        mixed = [[0.5 * float(a[0, :, i, j].mean()) + 0.5 * (i == j) for j in range(3)] for i in range(3)]
        mixed = torch.tensor([[x / sum(row) for x in row] for row in mixed])
        expected = mixed @ expected
    torch.testing.assert_close(rollout(layers)[0], expected)
    assert torch.allclose(rollout(layers).sum(dim=-1), torch.ones(1, 3))  # a distribution over inputs
    torch.testing.assert_close(rollout(layers, residual=0.0)[0], layers[1].mean(1)[0] @ layers[0].mean(1)[0])


def test_gradient_rollout_by_hand():
    layers = [_random_attention(1, 2, 3, seed) for seed in (2, 3)]
    grads = [torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(seed)) for seed in (4, 5)]
    expected = torch.eye(3)
    for a, g in zip(layers, grads, strict=True):
        relevance = torch.zeros(3, 3)
        for i, j in itertools.product(range(3), range(3)):
            relevance[i, j] = sum(max(0.0, float(g[0, h, i, j] * a[0, h, i, j])) for h in range(2)) / 2
        expected = expected + relevance @ expected
    torch.testing.assert_close(gradient_rollout(layers, grads)[0], expected)
    with pytest.raises(ValueError, match="one gradient per layer"):
        gradient_rollout(layers, grads[:1])


def test_gradient_rollout_from_captured_gradients_of_a_classifier():
    model = TextClassifier(TEXT, 3).eval()
    ids = _ids(1, 6, 30)
    with capture_attention(model, keep_grad=True) as captured:
        logits = model(ids)
        logits[0, int(logits.argmax())].backward()
    maps = [captured[f"body.encoder.layers.{i}.self_attn"].calls[0] for i in range(2)]
    assert all(m.grad is not None and m.grad.shape == m.shape for m in maps)
    relevance = pooled_row(gradient_rollout([m.detach() for m in maps], [m.grad for m in maps]), "mean")
    assert relevance.shape == (1, 6) and torch.all(relevance >= 0)


def test_weight_gradients_are_the_same_with_frozen_parameters():
    """With no parameter recording gradients the graph starts at the first attention's queries; the
    gradients with respect to every layer's weights must equal those of the full graph."""
    model = TextClassifier(TEXT, 3).eval()
    ids = _ids(2, 6, 30)

    def weight_grads() -> list[torch.Tensor]:
        with capture_attention(model, keep_grad=True) as captured:
            logits = model(ids)
            logits[:, 1].sum().backward()
        return [captured[f"body.encoder.layers.{i}.self_attn"].calls[0].grad for i in range(2)]

    want = weight_grads()
    model.zero_grad()
    model.requires_grad_(False)
    got = weight_grads()
    assert all(p.grad is None for p in model.parameters())  # nothing else was computed
    for g, w in zip(got, want, strict=True):
        assert g is not None and g.abs().sum() > 0
        torch.testing.assert_close(g, w)


def test_summaries_by_hand():
    weights = torch.tensor([[[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]]])  # (1, 1, 3, 3)
    entropies = entropy(weights)[0, 0]
    assert entropies.tolist() == pytest.approx(
        [
            2 * -0.5 * torch.log(torch.tensor(0.5)).item(),
            0.0,
            -sum(p * torch.log(torch.tensor(p)).item() for p in (0.2, 0.3, 0.5)),
        ]
    )
    assert mass_on(weights, first_token(3))[0, 0].tolist() == pytest.approx([0.5, 1.0, 0.2])
    assert mass_on(weights, torch.tensor([[False, True, True]]))[0, 0].tolist() == pytest.approx([0.5, 0.0, 0.8])
    two = torch.cat([weights, weights.flip(-1)], dim=1)  # (1, 2, 3, 3)
    torch.testing.assert_close(head_summary(two), (weights + weights.flip(-1))[:, 0] / 2)
    torch.testing.assert_close(head_summary(two, "max"), torch.maximum(weights, weights.flip(-1))[:, 0])
    relevance = torch.arange(9.0).view(1, 3, 3)
    assert pooled_row(relevance, "cls").tolist() == [[0.0, 1.0, 2.0]]
    assert pooled_row(relevance, "mean", torch.tensor([[True, True, False]])).tolist() == [[1.5, 2.5, 3.5]]


def test_alignment_averages_heads_and_takes_the_argmax():
    cross = torch.tensor([[[[0.7, 0.3], [0.1, 0.9]], [[0.5, 0.5], [0.3, 0.7]]]])  # (1, 2, T=2, S=2)
    averaged, best = alignment(cross)
    torch.testing.assert_close(averaged, torch.tensor([[[0.6, 0.4], [0.2, 0.8]]]))
    assert best.tolist() == [[0, 1]]


def test_attention_module_class_is_untouched():
    assert "_attend" in MultiHeadAttention.__dict__
