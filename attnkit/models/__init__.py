"""attnkit.models: one model per task, built only from attnkit.nn."""

from attnkit.models.classifier import MaskedLanguageModel, TextClassifier
from attnkit.models.text_encoder import TextEncoder, TextEncoderConfig

__all__ = ["MaskedLanguageModel", "TextClassifier", "TextEncoder", "TextEncoderConfig"]
