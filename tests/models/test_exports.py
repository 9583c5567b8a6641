"""attnkit.models exports every model with its config, and the masked-LM model lives in mlm.py."""

from __future__ import annotations

import pytest
import torch

import attnkit.models
from attnkit.models import MaskedLanguageModel, TextEncoderConfig
from attnkit.nn import TransformerConfig

EXPORTED = [
    "GPT",
    "GPTConfig",
    "MaskedLanguageModel",
    "SASRec",
    "SASRecConfig",
    "TextClassifier",
    "TextEncoder",
    "TextEncoderConfig",
    "TransformerConfig",
    "Translator",
    "ViT",
    "ViTConfig",
]


def test_every_model_and_config_is_exported():
    assert sorted(attnkit.models.__all__) == sorted(EXPORTED)
    for name in EXPORTED:
        assert getattr(attnkit.models, name).__doc__, name
    assert attnkit.models.TransformerConfig is TransformerConfig  # Translator's config, from attnkit.nn


def test_masked_language_model_moved_to_mlm_and_is_still_importable_from_classifier():
    from attnkit.models.classifier import MaskedLanguageModel as from_classifier
    from attnkit.models.mlm import MaskedLanguageModel as from_mlm

    assert from_mlm is from_classifier is MaskedLanguageModel
    assert MaskedLanguageModel.__module__ == "attnkit.models.mlm"


@pytest.mark.parametrize(
    "module", ["classifier", "gpt", "mlm", "sasrec", "text_encoder", "translator", "vit"], ids=lambda m: m
)
def test_each_model_file_opens_with_a_docstring_naming_its_pieces(module):
    doc = __import__(f"attnkit.models.{module}", fromlist=["_"]).__doc__
    assert doc
    for piece in ("blocks", "norm"):
        assert piece in doc, piece


def test_masked_language_model_shapes_and_tied_output_layer():
    torch.manual_seed(0)
    model = MaskedLanguageModel(TextEncoderConfig(vocab_size=30, d_model=16, n_heads=2, n_layers=1, d_ff=32)).eval()
    ids = torch.randint(1, 30, (2, 7))
    chosen = torch.zeros(2, 7, dtype=torch.bool)
    chosen[0, 1] = chosen[1, 4] = chosen[1, 6] = True
    with torch.no_grad():
        full = model(ids)
        assert full.shape == (2, 7, 30)
        torch.testing.assert_close(model(ids, chosen), full[chosen])  # (3, 30)
    assert model.lm_head.weight is model.body.embed.weight
    assert set(model.state_dict()) >= {"body.embed.weight", "lm_head.weight", "lm_head.bias"}
