"""Multi-head attention (Vaswani et al. 2017, §3.2.2) with a key/value cache for decoding.

MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W_O,  head_i = Attention(Q W_Q^i, K W_K^i, V W_V^i)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.nn.attention import scaled_dot_product_attention
from attnkit.nn.positional import RotaryEmbedding


class KVCache:
    """Keys and values one attention layer has computed so far, kept across decoding steps.

    Self-attention appends the new step's keys and values; cross-attention stores the projected
    encoder output once and reuses it at every step. `k` and `v` are (B, H, S, Dh).

    Without autograd (decoding), the tensors live in buffers whose capacity doubles when full, so a
    step writes only its own positions instead of copying everything held (`torch.cat` each step
    makes generating T tokens cost O(T²) copies). When gradients flow into the new keys, appending
    concatenates instead, since writing into a buffer would modify tensors autograd has saved.

    Under `torch.inference_mode` a self-attention layer also keeps its q/k/v weights, concatenated
    once, in `projection`: parameters do not change within one decoding, and checking at every step
    whether they have cost 7% of a batch-1 GPT step.
    """

    def __init__(self) -> None:
        self._k: Tensor | None = None  # (B, H, capacity, Dh)
        self._v: Tensor | None = None
        self._length = 0
        self.projection: tuple[Tensor, Tensor | None] | None = None  # fused (3D, D) weight and (3D,) bias

    @property
    def length(self) -> int:
        """Number of positions S held."""
        return self._length

    @property
    def k(self) -> Tensor | None:
        """The keys held, (B, H, S, Dh), or None when empty."""
        return None if self._k is None else self._k.narrow(-2, 0, self._length)

    @property
    def v(self) -> Tensor | None:
        """The values held, (B, H, S, Dh), or None when empty."""
        return None if self._v is None else self._v.narrow(-2, 0, self._length)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add k, v (B, H, T, Dh) after what is held; return all keys and values (B, H, S + T, Dh)."""
        new = k.size(-2)
        if self._k is None:
            self._k, self._v = k, v
        elif torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            self._k = torch.cat([self.k, k], dim=-2)
            self._v = torch.cat([self.v, v], dim=-2)
        else:
            if self._length + new > self._k.size(-2):
                self._grow(self._length + new)
            self._k.narrow(-2, self._length, new).copy_(k)
            self._v.narrow(-2, self._length, new).copy_(v)
        self._length += new
        return self._k.narrow(-2, 0, self._length), self._v.narrow(-2, 0, self._length)

    def _grow(self, needed: int) -> None:
        """Move what is held into buffers of at least twice the capacity."""
        capacity = max(needed, 2 * self._k.size(-2))
        for name in ("_k", "_v"):
            held = getattr(self, name)[..., : self._length, :]
            buffer = held.new_empty(*held.shape[:-2], capacity, held.size(-1))
            buffer[..., : self._length, :] = held
            setattr(self, name, buffer)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (N,) in that order, e.g. the surviving hypotheses of a beam search."""
        if self._k is not None:
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Self-, cross- or causal attention over H heads of width d_model / H.

    Args:
        d_model: width D of the queries and of the output.
        n_heads: number of heads H; must divide d_model.
        dropout: dropout on the attention weights, in training only.
        bias: whether the four projections have biases.
        kv_dim: width of the context that keys and values are computed from (default d_model).
        rope: rotary embedding applied to queries and keys of self-attention.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        dropout: float = 0.0,
        bias: bool = True,
        kv_dim: int | None = None,
        rope: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
        kv_dim = d_model if kv_dim is None else kv_dim
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(kv_dim, d_model, bias=bias)
        self.v_proj = nn.Linear(kv_dim, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.rope = rope
        self._qkv_key: tuple | None = None  # what `_qkv_fused` was built from (see _qkv_parameters)
        self._qkv_fused: tuple[Tensor, Tensor | None] | None = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from x to itself (context=None) or to `context`.

        Args:
            x: queries' input (B, T, D).
            context: keys' and values' input (B, S, kv_dim) for cross-attention.
            mask: bool, broadcastable to (B, H, T, S), True = may attend; with a cache, S counts the
                cached positions too.
            causal: each position attends to itself and earlier ones only.
            cache: self-attention appends this call's keys and values to it (x holds only the new
                positions, which come right after the cached ones); cross-attention fills it from
                `context` on the first call and reuses it afterwards, ignoring `context`.
            return_weights: also return the weights (B, H, T, S) (takes the reference path).

        Returns:
            (B, T, D), or (output, weights) when `return_weights`.
        """
        batch, q_len, _ = x.shape
        if context is None:
            offset = 0 if cache is None else cache.length
            q, k, v = self._project_qkv(x, cache)  # (B, H, T, Dh) each
            if self.rope is not None:
                q, k = self.rope(q, offset), self.rope(k, offset)
            if cache is not None:
                k, v = cache.append(k, v)  # (B, H, offset + T, Dh)
        else:
            if self.rope is not None:
                raise ValueError("rotary embeddings apply to self-attention only; call without context")
            q = self._split_heads(self.q_proj(x))  # (B, H, T, Dh)
            if cache is not None and cache.length:
                k, v = cache.k, cache.v
            else:
                k = self._split_heads(self.k_proj(context))  # (B, H, S, Dh)
                v = self._split_heads(self.v_proj(context))
                if cache is not None:
                    cache.append(k, v)
        result = scaled_dot_product_attention(
            q,
            k,
            v,
            mask,
            causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            return_weights=return_weights,
        )
        out, weights = result if return_weights else (result, None)
        out = out.transpose(1, 2).reshape(batch, q_len, self.d_model)  # (B, T, D)
        out = self.out_proj(out)
        return (out, weights) if return_weights else out

    def _project_qkv(self, x: Tensor, cache: KVCache | None = None) -> tuple[Tensor, ...]:
        """x (B, T, D) -> q, k, v (B, H, T, Dh) each, from one matrix product with the three weights
        side by side.

        The same arithmetic as three `nn.Linear` calls; one larger product keeps the CPU's matrix
        kernels busier than three small ones. When decoding, the fused weights are taken from `cache`.
        """
        if cache is not None and torch.is_inference_mode_enabled():
            if cache.projection is None:
                cache.projection = self._qkv_parameters()
            weight, bias = cache.projection
        else:
            weight, bias = self._qkv_parameters()
        batch, length, _ = x.shape
        qkv = F.linear(x, weight, bias).view(batch, length, 3, self.n_heads, self.head_dim)  # (B, T, 3, H, Dh)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 × (B, H, T, Dh)

    def _qkv_parameters(self) -> tuple[Tensor, Tensor | None]:
        """The three projections' weights (3D, D) and biases (3D,) side by side.

        Under `torch.inference_mode` (decoding) the concatenation is kept and reused until a parameter
        changes (in-place updates bump a tensor's version; a replaced tensor has another address):
        at batch 1 copying the weights at every step would cost as much as the product itself.
        """
        key = None
        if torch.is_inference_mode_enabled():
            key = tuple(
                (p.data_ptr(), p._version)
                for proj in (self.q_proj, self.k_proj, self.v_proj)
                for p in (proj.weight, proj.bias)
                if p is not None
            )
            if key == self._qkv_key:
                return self._qkv_fused
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])  # (3D, D)
        bias = None
        if self.q_proj.bias is not None:
            bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])  # (3D,)
        if key is not None:
            self._qkv_key, self._qkv_fused = key, (weight, bias)
        return weight, bias

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
