"""SASRec's properties: causality, padding invariance, the shared item table, its config checks, and
loading weights saved by earlier releases."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from attnkit.engine import load_weights
from attnkit.models.sasrec import SASRec, SASRecConfig


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and far faster than on two busy shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0, **overrides) -> SASRec:
    torch.manual_seed(seed)
    sizes = {"n_items": 30, "max_len": 12, "d_model": 16, "n_heads": 2, "n_layers": 2, "d_ff": 24, "dropout": 0.2}
    return SASRec(SASRecConfig(**{**sizes, **overrides})).eval()


STYLES = [{"style": "attnkit", "norm_first": True}, {"style": "attnkit", "norm_first": False}, {"style": "reference"}]


@pytest.mark.parametrize("style", STYLES)
def test_causality(style):
    model = _model(**style)
    history = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2], [5, 6, 7, 8, 9, 10, 11, 12]])
    changed = history.clone()
    changed[:, 5] = torch.tensor([21, 22])
    with torch.no_grad():
        before, after = model(history), model(changed)
    torch.testing.assert_close(after[:, :5], before[:, :5], atol=1e-6, rtol=0)  # earlier positions cannot see 5
    assert not torch.allclose(before[:, 5:], after[:, 5:])  # later ones do


@pytest.mark.parametrize("style", STYLES)
def test_padding_invariance(style):
    model = _model(**style)
    items = [3, 7, 1, 9, 4]
    short = torch.tensor([items])  # (1, 5)
    for extra in (1, 4, 7):  # up to the full max_len of 12
        padded = torch.tensor([[0] * extra + items])
        with torch.no_grad():
            a, b = model(short), model(padded)
        torch.testing.assert_close(b[:, extra:], a, atol=1e-6, rtol=0)
        assert torch.isfinite(b).all()  # fully masked (padding) rows give numbers, not NaN


def test_batch_rows_are_independent():
    model = _model()
    a = torch.tensor([[0, 0, 0, 4, 5, 6]])
    b = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        together = model(torch.cat([a, b]))
        torch.testing.assert_close(together[0], model(a)[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(together[1], model(b)[0], atol=1e-6, rtol=0)


def test_history_longer_than_max_len_is_an_error():
    model = _model()
    model(torch.ones(2, 12, dtype=torch.long))  # exactly max_len is fine
    with pytest.raises(ValueError, match="exceeds max_len=12"):
        model(torch.ones(2, 13, dtype=torch.long))


def test_output_shape_and_dropout_only_in_training():
    model = _model()
    history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    with torch.no_grad():
        assert model(history).shape == (2, 4, 16)
        assert torch.equal(model(history), model(history))  # eval: deterministic
        model.train()
        assert not torch.equal(model(history), model(history))


def test_attention_dropout_drops_attention_weights_in_training_only():
    model = _model(dropout=0.0, attention_dropout=0.5)
    assert all(layer.self_attn.dropout == 0.5 for layer in model.blocks.layers)
    history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(history), model(history))
        model.train()
        assert not torch.equal(model(history), model(history))
        without = _model(dropout=0.0).train()  # the same weights, no dropout anywhere: deterministic
        assert torch.equal(without(history), without(history))


def test_reference_style_blocks_and_initialisation():
    torch.manual_seed(0)
    config = SASRecConfig(n_items=3000, max_len=200, d_model=50, style="reference", dropout=0.0)
    model = SASRec(config).eval()
    items, positions = model.item_embed.weight, model.pos.weight
    assert torch.equal(items[0], torch.zeros(50))
    # Xavier-normal: std sqrt(2 / (fan_in + fan_out)); the item vectors come out smaller than the positions.
    assert items[1:].std().item() == pytest.approx((2 / (3001 + 50)) ** 0.5, rel=0.05)
    assert positions.std().item() == pytest.approx((2 / (200 + 50)) ** 0.5, rel=0.05)
    # One block by hand: q = LN(x); x = q + Attention(q, keys/values x); x = LN'(x); x = x + FFN(x).
    block = model.blocks.layers[0]
    x = torch.randn(2, 6, 50)
    keep = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        q = block.attn_norm(x)
        h = q + block.self_attn(q, x, causal=True)
        h = block.ffn_norm(h)
        torch.testing.assert_close(block(x, keep), h + block.ffn(h))


def test_item_embedding_is_the_output_table():
    model = _model()
    states = torch.randn(3, 5, 16)
    scores = model.score_all(states)
    assert scores.shape == (3, 5, 31)
    table = model.item_embed.weight
    for i in (0, 1, 17, 30):
        torch.testing.assert_close(scores[..., i], states @ table[i])
    # No separate output matrix: the only (n_items + 1, d) parameter is the embedding.
    shaped = [name for name, p in model.named_parameters() if p.shape == (31, 16)]
    assert shaped == ["item_embed.weight"]


def test_score_agrees_with_score_all():
    model = _model()
    states = torch.randn(4, 16)
    items = torch.tensor([[1, 5, 5, 0], [30, 2, 3, 4], [7, 7, 7, 7], [9, 10, 11, 12]])
    expected = model.score_all(states).gather(1, items)
    torch.testing.assert_close(model.score(states, items), expected)
    per_position = torch.randn(4, 6, 16)
    items3 = torch.randint(0, 31, (4, 6, 3))
    expected3 = model.score_all(per_position).gather(2, items3)
    torch.testing.assert_close(model.score(per_position, items3), expected3)


def test_padding_row_is_zero_at_init_and_gets_no_gradient():
    model = _model()
    assert torch.equal(model.item_embed.weight[0], torch.zeros(16))
    assert model.item_embed.weight[1:].abs().sum() > 0
    model.train()
    model(torch.tensor([[0, 0, 1, 2]])).sum().backward()
    assert torch.equal(model.item_embed.weight.grad[0], torch.zeros(16))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_items": 0}, "n_items must be >= 1"),
        ({"max_len": 0}, "max_len must be >= 1"),
        ({"d_model": 10, "n_heads": 3}, "n_heads=3 must divide d_model=10"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"attention_dropout": -0.1}, "attention_dropout must be in"),
        ({"style": "keras"}, "style must be attnkit or reference"),
        ({"style": "reference", "norm_first": False}, "norm_first=False applies to the attnkit style only"),
    ],
)
def test_config_checks(overrides, message):
    with pytest.raises(ValueError, match=message):
        SASRecConfig(**{"n_items": 5, **overrides})


def test_config_round_trips_through_a_dict():
    config = SASRecConfig(n_items=7, max_len=9, d_model=8, n_heads=2, n_layers=1, d_ff=4, dropout=0.0)
    assert SASRecConfig.from_dict(config.to_dict()) == config


def _saved_before_the_rename(model: SASRec) -> dict[str, torch.Tensor]:
    """The model's weights under the names earlier releases saved: the stack was `encoder`, not `blocks`."""
    return {
        "encoder." + key.removeprefix("blocks.") if key.startswith("blocks.") else key: value.clone()
        for key, value in model.state_dict().items()
    }


def test_the_stack_is_named_blocks():
    for style in STYLES:
        keys = list(_model(**style).state_dict())
        assert any(key.startswith("blocks.layers.0.") for key in keys)
        assert not any(key.startswith("encoder.") for key in keys)


@pytest.mark.parametrize("style", STYLES)
def test_a_run_saved_with_the_old_encoder_names_loads_and_gives_the_same_states(style, tmp_path):
    old = _model(seed=1, **style)
    weights = _saved_before_the_rename(old)
    assert any(key.startswith("encoder.layers.0.") for key in weights)
    path = tmp_path / "model.safetensors"
    save_file(weights, str(path), metadata={"format": "pt"})  # as an earlier release's run directory holds it
    new = _model(seed=2, **style)
    history = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2], [5, 6, 7, 8, 9, 10, 11, 12]])
    with torch.no_grad():
        assert not torch.equal(new(history), old(history))  # other weights before loading
        load_weights(new, path)  # the path every task loads a run's weights on: strict, raises on any leftover
        assert torch.equal(new(history), old(history))
    for name, tensor in new.state_dict().items():
        assert torch.equal(tensor, old.state_dict()[name]), name


def test_old_names_load_strictly_also_when_the_model_is_nested_and_new_names_still_load():
    old = _model(seed=1)
    fresh = _model(seed=2)
    fresh.load_state_dict(_saved_before_the_rename(old))  # strict
    assert all(torch.equal(t, old.state_dict()[k]) for k, t in fresh.state_dict().items())
    outer = nn.ModuleDict({"recommender": _model(seed=3)})
    outer.load_state_dict({f"recommender.{k}": v for k, v in _saved_before_the_rename(old).items()})
    assert all(torch.equal(t, old.state_dict()[k]) for k, t in outer["recommender"].state_dict().items())
    again = _model(seed=4)
    again.load_state_dict(old.state_dict())  # weights saved under the new names
    assert all(torch.equal(t, old.state_dict()[k]) for k, t in again.state_dict().items())


def test_a_config_saved_before_style_existed_loads_as_the_attnkit_style():
    saved = SASRecConfig(n_items=7, max_len=9, d_model=8, n_heads=2, n_layers=1, d_ff=4).to_dict()
    saved.pop("style")
    assert SASRecConfig.from_dict(saved).style == "attnkit"
    assert SASRecConfig(n_items=7).style == "reference"  # the default now: the authors' blocks
