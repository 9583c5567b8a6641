"""attnkit.models: one model per file, built only from attnkit.nn, each with its configuration.

TextEncoder, TextEncoderConfig   text_encoder.py  BERT-style encoder body (no head)
TextClassifier                   classifier.py    text classification on a TextEncoder
MaskedLanguageModel              mlm.py           BERT's masked-LM pre-training on a TextEncoder
Translator, TransformerConfig    translator.py    the encoder-decoder Transformer (config from attnkit.nn)
GPT, GPTConfig                   gpt.py           decoder-only language model
SASRec, SASRecConfig             sasrec.py        self-attentive sequential recommendation
ViT, ViTConfig                   vit.py           Vision Transformer
"""

from attnkit.models.classifier import TextClassifier
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.mlm import MaskedLanguageModel
from attnkit.models.sasrec import SASRec, SASRecConfig
from attnkit.models.text_encoder import TextEncoder, TextEncoderConfig
from attnkit.models.translator import TransformerConfig, Translator
from attnkit.models.vit import ViT, ViTConfig

__all__ = [
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
