"""attnkit.models: one model per task, built only from attnkit.nn."""

from attnkit.models.classifier import MaskedLanguageModel, TextClassifier
from attnkit.models.sasrec import SASRec, SASRecConfig
from attnkit.models.text_encoder import TextEncoder, TextEncoderConfig
from attnkit.models.translator import Translator

__all__ = [
    "MaskedLanguageModel",
    "SASRec",
    "SASRecConfig",
    "TextClassifier",
    "TextEncoder",
    "TextEncoderConfig",
    "Translator",
]
