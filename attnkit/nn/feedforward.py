"""Position-wise feed-forward networks (Vaswani et al. 2017, §3.3) and the gated SwiGLU variant
(Shazeer 2020, "GLU Variants Improve Transformer")."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.nn.dropout import Dropout

Activation = Literal["relu", "gelu", "gelu_tanh", "silu", "swiglu"]
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swiglu")


class FeedForward(nn.Module):
    """FFN(x) = down(act(up(x))), applied to each position alone; SwiGLU: down(silu(gate(x)) * up(x)).

    Args:
        d_model: input and output width D.
        d_ff: inner width (2048 = 4 D in the paper's base model).
        activation: "relu" (the paper), "gelu" (BERT), "gelu_tanh" (GELU's tanh approximation, as GPT-2
            has it; on CPU it also costs a fraction of exact GELU on small inputs), "silu" (x·σ(x), Marian's
            "swish"), or "swiglu".
        dropout: dropout on the inner activations, in training only (as PyTorch's encoder layer).
        bias: whether the linear layers have biases.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        *,
        activation: Activation = "relu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias) if activation == "swiglu" else None
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, D) -> (B, L, D)."""
        hidden = self.up_proj(x)  # (B, L, d_ff)
        if self.activation == "relu":
            hidden = F.relu(hidden)
        elif self.activation == "gelu":
            hidden = F.gelu(hidden)
        elif self.activation == "gelu_tanh":
            hidden = F.gelu(hidden, approximate="tanh")
        elif self.activation == "silu":
            hidden = F.silu(hidden)
        else:
            hidden = F.silu(self.gate_proj(x)) * hidden
        return self.down_proj(self.dropout(hidden))
