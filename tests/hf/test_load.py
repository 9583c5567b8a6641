"""`attnkit.hf.load`: tiny Hugging Face models with random weights, built from their configs and saved
with `save_pretrained` here (no network), give the same outputs in attnkit's modules as in
transformers' own: hidden states and logits, padded rows, segments, the pooler, cached decoding and
greedy generation."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from attnkit.decode import CausalLMStepper, Seq2SeqStepper, beam_search, greedy_decode
from attnkit.hf import CheckpointImportError, load
from attnkit.models import GPT, MaskedLanguageModel, TextClassifier, TextEncoder, ViT
from tests.hf.models import randomise, tiny_marian

transformers = pytest.importorskip("transformers", reason="the parity tests need transformers (extra: hf)")

ATOL = 1e-5


def _save(model: torch.nn.Module, path) -> str:
    model.save_pretrained(path)
    return str(path)


def _gpt2_config(**overrides):
    settings = dict(vocab_size=61, n_embd=32, n_layer=2, n_head=4, n_positions=24, activation_function="gelu_new")
    return transformers.GPT2Config(**{**settings, **overrides})


def _bert_config(**overrides):
    settings = dict(
        vocab_size=53,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=20,
        type_vocab_size=2,
    )
    return transformers.BertConfig(**{**settings, **overrides})


def _vit_config(**overrides):
    settings = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, image_size=16, patch_size=4
    )
    return transformers.ViTConfig(**{**settings, **overrides})


# ------------------------------------------------------------------------------------------ GPT-2


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A GPT2LMHeadModel with random weights and its attnkit import."""
    ref = randomise(transformers.GPT2LMHeadModel(_gpt2_config()))
    path = _save(ref, tmp_path_factory.mktemp("gpt2"))
    return ref, load(path)


def test_gpt2_logits_match(gpt2):
    ref, ours = gpt2
    assert isinstance(ours, GPT) and ours.config.activation == "gelu_tanh"
    ids = torch.randint(0, 61, (3, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), ref(ids).logits, atol=ATOL, rtol=0)


def test_gpt2_right_padded_rows_match_at_their_tokens(gpt2):
    """attnkit pads on the right; causal attention keeps real tokens from the padding after them."""
    ref, ours = gpt2
    ids = torch.randint(1, 61, (2, 9), generator=torch.Generator().manual_seed(2))
    ids[1, 6:] = 0
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask).logits
        got = ours(ids)
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=ATOL, rtol=0)


def test_gpt2_left_padded_rows_match_with_keep(gpt2):
    """Batched generation pads prompts on the left: with `keep`, padding is hidden and positions count
    real tokens, as transformers does with an attention mask; the cached path gives the same states."""
    ref, ours = gpt2
    ids = torch.randint(1, 61, (3, 9), generator=torch.Generator().manual_seed(12))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :1] = 0
    ids = ids.masked_fill(mask == 0, 0)
    keep = mask.bool()
    with torch.no_grad():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as transformers' generate derives them
        expected = ref(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, keep=keep)
        cache = ours.new_cache()
        first = ours(ids[:, :6], cache=cache, keep=keep[:, :6])
        rest = ours(ids[:, 6:], cache=cache, keep=keep)
    torch.testing.assert_close(got[keep], expected[keep], atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat([first, rest], dim=1)[keep], expected[keep], atol=ATOL, rtol=0)
    alone = ours(ids[1:2, 4:])  # the padded row's real tokens on their own
    torch.testing.assert_close(got[1, 4:], alone[0], atol=ATOL, rtol=0)


def test_gpt2_cached_decoding_and_greedy_generation_match(gpt2):
    ref, ours = gpt2
    prompt = torch.randint(0, 61, (2, 5), generator=torch.Generator().manual_seed(3))
    cached = greedy_decode(CausalLMStepper(ours), prompt, eos_id=None, max_new_tokens=12, pad_id=None)
    full = greedy_decode(CausalLMStepper(ours, use_cache=False), prompt, eos_id=None, max_new_tokens=12, pad_id=None)
    with torch.no_grad():
        expected = ref.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(cached, full)
    assert torch.equal(cached, expected[:, prompt.size(1) :])


def test_gpt2_model_without_head_gives_the_hidden_states(tmp_path):
    ref = randomise(transformers.GPT2Model(_gpt2_config(activation_function="gelu")))
    ours = load(_save(ref, tmp_path))
    ids = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours.hidden(ids), ref(ids).last_hidden_state, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------- BERT


def _bert_inputs(seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids with a padded row (pad 0), segments 0 then 1, and the attention mask."""
    ids = torch.randint(1, 53, (3, 12), generator=torch.Generator().manual_seed(seed))
    ids[1, 8:] = 0
    ids[2, 4:] = 0
    segments = torch.zeros_like(ids)
    segments[:, 5:] = 1
    return ids, segments, (ids != 0).long()


def test_bert_hidden_states_match_with_padding_and_segments(tmp_path):
    ref = randomise(transformers.BertModel(_bert_config()))
    ours = load(_save(ref, tmp_path))
    assert isinstance(ours, TextEncoder) and ours.config.eps == 1e-12 and not ours.config.norm_first
    ids, segments, mask = _bert_inputs()
    with torch.no_grad():
        hidden, keep = ours(ids, segments)
        expected = ref(ids, attention_mask=mask, token_type_ids=segments).last_hidden_state
    assert torch.equal(keep, mask.bool())
    torch.testing.assert_close(hidden[keep], expected[keep], atol=ATOL, rtol=0)


def test_bert_classifier_with_its_pooler_matches(tmp_path):
    ref = randomise(transformers.BertForSequenceClassification(_bert_config(num_labels=3)))
    ours = load(_save(ref, tmp_path))
    assert isinstance(ours, TextClassifier) and ours.pooling == "pooler"
    ids, segments, mask = _bert_inputs(6)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(ids, segments), ref(ids, attention_mask=mask, token_type_ids=segments).logits, atol=ATOL, rtol=0
        )


def test_bert_masked_lm_matches(tmp_path):
    ref = randomise(transformers.BertForMaskedLM(_bert_config()))
    ours = load(_save(ref, tmp_path))
    assert isinstance(ours, MaskedLanguageModel)
    ids, segments, mask = _bert_inputs(7)
    with torch.no_grad():
        got = ours(ids, segments=segments)
        expected = ref(ids, attention_mask=mask, token_type_ids=segments).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)


def test_bert_model_as_a_classifier_gets_a_new_head_and_keeps_the_pooler(tmp_path):
    ref = randomise(transformers.BertModel(_bert_config()))
    ours = load(_save(ref, tmp_path), task="classify", num_labels=4)
    assert isinstance(ours, TextClassifier) and ours.head.out_features == 4
    ids, segments, mask = _bert_inputs(8)
    with torch.no_grad():
        pooled = ours.pooler(ours.body(ids, segments)[0][:, 0])
        expected = ref(ids, attention_mask=mask, token_type_ids=segments).pooler_output
    torch.testing.assert_close(pooled, expected, atol=ATOL, rtol=0)


# -------------------------------------------------------------------------------------------- ViT


def test_vit_classifier_logits_match(tmp_path):
    ref = randomise(transformers.ViTForImageClassification(_vit_config(num_labels=5)))
    ours = load(_save(ref, tmp_path))
    assert isinstance(ours, ViT) and ours.config.n_classes == 5 and ours.config.grid == 4
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        torch.testing.assert_close(ours(images), ref(images).logits, atol=ATOL, rtol=0)


def test_vit_model_needs_the_number_of_labels(tmp_path):
    path = _save(randomise(transformers.ViTModel(_vit_config())), tmp_path)
    with pytest.raises(CheckpointImportError, match="needs --num-labels"):
        load(path)
    assert load(path, num_labels=3).head.out_features == 3


# ------------------------------------------------------------------------------------- strictness


def test_an_unused_tensor_is_an_error_naming_it(tmp_path):
    path = tmp_path / "gpt2"
    _save(transformers.GPT2LMHeadModel(_gpt2_config()), path)
    from safetensors.torch import load_file

    tensors = load_file(str(path / "model.safetensors"))
    tensors["transformer.h.0.attn.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointImportError, match=r"1 tensor\(s\) .* does not use: transformer.h.0.attn.extra"):
        load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"activation_function": "relu"}, "activation_function 'relu' is not supported"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx = true is not supported"),
        ({"model_type": "llama"}, "model_type 'llama' is not supported (supported: bert, gpt2, marian, vit)"),
    ],
)
def test_unsupported_settings_are_refused_by_name(tmp_path, change, message):
    _save(transformers.GPT2LMHeadModel(_gpt2_config()), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointImportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(tmp_path)


def test_a_pickle_only_checkpoint_is_refused_without_unpickling(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointImportError, match=r"only pytorch_model\.bin is there, and attnkit never unpickles"):
        load(tmp_path)


# ----------------------------------------------------------------------------------------- Marian


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    """A MarianMTModel with OPUS-MT's settings set explicitly (swish, scaled embeddings, pad = decoder
    start, eos 0, shared and tied embeddings) and random weights, and its attnkit import."""
    ref = tiny_marian(transformers, vocab_size=67, max_positions=40, forced_eos_token_id=None)
    path = _save(ref.eval(), tmp_path_factory.mktemp("marian"))
    return transformers.MarianMTModel.from_pretrained(path).eval(), load(path)


def _marian_source(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.randint(1, 66, (3, 9), generator=torch.Generator().manual_seed(seed))
    src[:, -1] = 0  # eos ends each sentence
    src[1, 6:] = 66  # a padded row
    src[1, 5] = 0
    return src, (src != 66).long()


def test_marian_logits_match_with_padding_and_the_pad_start_token(marian):
    ref, ours = marian
    assert ours.config.positional == "sinusoidal_split" and ours.config.activation == "silu"
    assert ours.bos_id == ours.config.pad_id == 66 and ours.eos_id == 0
    src, mask = _marian_source(13)
    tgt = torch.randint(1, 66, (3, 6), generator=torch.Generator().manual_seed(14))
    tgt[:, 0] = 66  # the decoder starts from the pad id, which must not be masked
    with torch.no_grad():
        expected = ref(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        torch.testing.assert_close(ours(src, tgt), expected, atol=ATOL, rtol=0)


def test_marian_greedy_generation_matches_cached_and_not(marian):
    ref, ours = marian
    src, mask = _marian_source(15)
    start = torch.full((3,), ours.bos_id)
    cached = greedy_decode(Seq2SeqStepper(ours, src), start, eos_id=0, max_new_tokens=12, pad_id=66)
    full = greedy_decode(Seq2SeqStepper(ours, src, use_cache=False), start, eos_id=0, max_new_tokens=12, pad_id=66)
    with torch.no_grad():
        expected = ref.generate(src, attention_mask=mask, max_new_tokens=12, num_beams=1, do_sample=False)[:, 1:]
    assert torch.equal(cached, full)
    width = max(cached.size(1), expected.size(1))
    padded = [torch.nn.functional.pad(t, (0, width - t.size(1)), value=66) for t in (cached, expected)]
    assert torch.equal(padded[0], padded[1])
    assert len(set(cached.flatten().tolist())) > 2  # not one token repeated everywhere


def test_marian_beam_search_matches_transformers_at_equal_lengths(marian):
    """With every hypothesis held to the same length (eos held back until then), neither length
    penalty nor stopping rule plays a part: both beam searches keep the K most probable prefixes."""
    ref, ours = marian
    src, mask = _marian_source(16)
    start = torch.full((3,), ours.bos_id)
    got = beam_search(
        Seq2SeqStepper(ours, src), start, eos_id=0, max_new_tokens=10, min_new_tokens=10, beam_size=3, pad_id=66
    ).tokens
    with torch.no_grad():
        expected = ref.generate(
            src, attention_mask=mask, num_beams=3, min_new_tokens=10, max_new_tokens=10, do_sample=False
        )[:, 1:]
    greedy = greedy_decode(Seq2SeqStepper(ours, src), start, eos_id=0, max_new_tokens=10, min_new_tokens=10, pad_id=66)
    assert torch.equal(got, expected)
    assert not torch.equal(got, greedy)  # the beam found other sequences than greedy search


def test_vit_positions_interpolate_as_transformers_does_at_another_image_size(tmp_path):
    """An image larger than the checkpoint's: both resample the patch positions bicubically."""
    ref = randomise(transformers.ViTForImageClassification(_vit_config(num_labels=3)))
    ours = load(_save(ref, tmp_path))
    images = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(10))  # a 6 x 6 grid, not 4 x 4
    with torch.no_grad():
        expected = ref(images, interpolate_pos_encoding=True).logits
        torch.testing.assert_close(ours(images), expected, atol=ATOL, rtol=0)
