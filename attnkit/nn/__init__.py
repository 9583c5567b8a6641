"""attnkit.nn: attention and the Transformer from first principles.

Knows nothing of files, tokenizers or tasks. Masks are boolean and mean "may attend".
"""

from attnkit.nn.attention import fused_attention, reference_attention, scaled_dot_product_attention
from attnkit.nn.dropout import Dropout
from attnkit.nn.feedforward import FeedForward
from attnkit.nn.layers import DecoderLayer, EncoderLayer
from attnkit.nn.losses import linear_cross_entropy
from attnkit.nn.masks import causal_mask, padding_mask
from attnkit.nn.multihead import KVCache, MultiHeadAttention, StaticKVCache
from attnkit.nn.norms import LayerNorm, MaskedBatchNorm, RMSNorm, make_norm
from attnkit.nn.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_table,
)
from attnkit.nn.stacks import Decoder, DecoderCache, Encoder
from attnkit.nn.transformer import Transformer, TransformerConfig

__all__ = [
    "Decoder",
    "DecoderCache",
    "DecoderLayer",
    "Dropout",
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "KVCache",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "MaskedBatchNorm",
    "MultiHeadAttention",
    "RMSNorm",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "StaticKVCache",
    "Transformer",
    "TransformerConfig",
    "causal_mask",
    "fused_attention",
    "linear_cross_entropy",
    "make_norm",
    "padding_mask",
    "reference_attention",
    "scaled_dot_product_attention",
    "sinusoidal_table",
]
