"""attnkit.viz: pictures of what models do (training curves, confusion matrices, attention).

`capture_attention(model)` records the weights of every attention module while a model runs;
`attnkit.viz.attention` computes from them head summaries, entropy, attention mass, rollout,
gradient rollout and cross-attention alignment.
"""

from attnkit.viz.attention import (
    alignment,
    entropy,
    first_token,
    gradient_rollout,
    head_summary,
    mass_on,
    pooled_row,
    rollout,
)
from attnkit.viz.capture import AttentionCapture, AttentionMap, attention_modules, capture_attention

__all__ = [
    "AttentionCapture",
    "AttentionMap",
    "alignment",
    "attention_modules",
    "capture_attention",
    "entropy",
    "first_token",
    "gradient_rollout",
    "head_summary",
    "mass_on",
    "pooled_row",
    "rollout",
]
