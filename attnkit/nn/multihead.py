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
    def offset(self) -> int:
        """The position of the next token appended: `length`."""
        return self._length

    def visible(self, new: int, causal: bool) -> None:
        """No mask is needed after an append: it returns exactly the keys held, and causal attention
        aligned at the end (query i at position S - T + i) hides the later ones. A `StaticKVCache`
        returns one (see its `visible`)."""
        return None

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


class StaticKVCache:
    """A key/value cache of fixed capacity whose position is a tensor, for a compiled decoding step.

    A `KVCache` grows, and its length is a Python int, so every step has new shapes and a compiled
    graph would be rebuilt at every position. Here the buffers `k`, `v` (B, H, capacity, Dh) are
    allocated once, by the first `append`, and the next position is a 0-d tensor: one step has the
    same shapes at every position, and `torch.compile` makes one graph for all of them. Attention
    reads all `capacity` keys at every step and `visible` hides those not written yet, so a step
    does more arithmetic than with a `KVCache`; compiled, it runs far fewer operators.

    Nothing here checks, inside a step, that the buffers have room (that would read the position
    back from the device): the caller keeps count (`attnkit.decode.CausalLMStepper` does).

    Args:
        capacity: the most positions held, at most the model's context.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.k: Tensor | None = None  # (B, H, capacity, Dh)
        self.v: Tensor | None = None
        self.position: Tensor | None = None  # () long: positions written so far
        self.projection: tuple[Tensor, Tensor | None] | None = None  # as KVCache.projection

    @property
    def length(self) -> int:
        """Number of positions held (reads the position back from its device)."""
        return 0 if self.position is None else int(self.position)

    @property
    def offset(self) -> Tensor | int:
        """The position of the next token appended: a 0-d tensor once anything is held, else 0."""
        return 0 if self.position is None else self.position

    def visible(self, new: int, causal: bool) -> Tensor:
        """(new, capacity) bool: the slots each of the `new` queries appended last may attend. With
        P positions now held, query i sits at P - new + i and sees slot j when j <= P - new + i
        (causal), or when j < P; later slots are not written yet."""
        slots = torch.arange(self.capacity, device=self.position.device)  # (C,)
        if causal:
            at = self.position - new + torch.arange(new, device=slots.device)  # (new,)
            return slots[None, :] <= at[:, None]  # (new, C)
        return (slots < self.position).expand(new, self.capacity)  # (new, C)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, H, T, Dh) at the next T positions; return the whole buffers (B, H, capacity, Dh)."""
        if self.k is None:
            batch, heads, _, width = k.shape
            self.k = k.new_zeros(batch, heads, self.capacity, width)
            self.v = v.new_zeros(batch, heads, self.capacity, v.size(-1))
            self.position = torch.zeros((), dtype=torch.long, device=k.device)
        index = self.position + torch.arange(k.size(-2), device=k.device)  # (T,)
        self.k.index_copy_(-2, index, k)
        self.v.index_copy_(-2, index, v)
        self.position.add_(k.size(-2))
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (N,) in that order, as `KVCache.reorder`."""
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)


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
        self.qkv_proj: nn.Linear | None = None  # the three self-attention projections as one (fuse_qkv)
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
                `context` on the first call and reuses it afterwards, ignoring `context`. A
                `StaticKVCache` (self-attention only) returns all its slots, and S is its capacity.
            return_weights: also return the weights (B, H, T, S) (takes the reference path).

        Returns:
            (B, T, D), or (output, weights) when `return_weights`.
        """
        batch, q_len, _ = x.shape
        if context is None:
            offset = 0 if cache is None else cache.offset
            q, k, v = self._project_qkv(x, cache)  # (B, H, T, Dh) each
            if self.rope is not None:
                q, k = self.rope(q, offset), self.rope(k, offset)
            if cache is not None:
                k, v = cache.append(k, v)  # (B, H, S, Dh): S = offset + T, or the static capacity
                visible = cache.visible(q_len, causal)  # None, or (T, S) for a StaticKVCache
                if visible is not None:
                    mask, causal = (visible if mask is None else mask & visible), False
        else:
            if self.rope is not None:
                raise ValueError("rotary embeddings apply to self-attention only; call without context")
            if isinstance(cache, StaticKVCache):
                raise ValueError("a StaticKVCache is for self-attention; cross-attention takes a KVCache")
            q = self._split_heads(self.q_proj(x))  # (B, H, T, Dh)
            if cache is not None and cache.length:
                k, v = cache.k, cache.v
            else:
                k = self._split_heads(self.k_proj(context))  # (B, H, S, Dh)
                v = self._split_heads(self.v_proj(context))
                if cache is not None:
                    cache.append(k, v)
        out, weights = self._attend(q, k, v, mask, causal=causal, cross=context is not None, weights=return_weights)
        out = out.transpose(1, 2).reshape(batch, q_len, self.d_model)  # (B, T, D)
        out = self.out_proj(out)
        return (out, weights) if return_weights else out

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, causal: bool, cross: bool, weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Scaled dot-product attention of the heads: out (B, H, T, Dh), and the weights (B, H, T, S) when
        `weights` (else None). `cross` says whether keys come from another sequence.
        `attnkit.viz.capture_attention` replaces this method on a module while it records."""
        dropout_p = self.dropout if self.training else 0.0
        if weights:
            return scaled_dot_product_attention(q, k, v, mask, causal=causal, dropout_p=dropout_p, return_weights=True)
        return scaled_dot_product_attention(q, k, v, mask, causal=causal, dropout_p=dropout_p), None

    def _project_qkv(self, x: Tensor, cache: KVCache | None = None) -> tuple[Tensor, ...]:
        """x (B, T, D) -> q, k, v (B, H, T, Dh) each, from one matrix product with the three weights
        side by side.

        The same arithmetic as three `nn.Linear` calls; one larger product keeps the CPU's matrix
        kernels busier than three small ones. When decoding, the fused weights are taken from `cache`.
        """
        batch, length, _ = x.shape
        if self.qkv_proj is not None:
            qkv = self.qkv_proj(x).view(batch, length, 3, self.n_heads, self.head_dim)  # (B, T, 3, H, Dh)
            return qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None and cache.projection is None and torch.is_inference_mode_enabled():
            cache.projection = self._qkv_parameters()
        if cache is not None and cache.projection is not None:  # set once, by the decoding's first step
            weight, bias = cache.projection
        else:
            weight, bias = self._qkv_parameters()
        qkv = F.linear(x, weight, bias).view(batch, length, 3, self.n_heads, self.head_dim)  # (B, T, 3, H, Dh)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 × (B, H, T, Dh)

    def fuse_qkv(self) -> None:
        """Hold the self-attention's three projections as one `nn.Linear` (3D <- D), `qkv_proj`, that
        self-attention uses from then on (cross-attention keeps `q_proj`, `k_proj`, `v_proj`).

        For conversions that replace each `nn.Linear` by another module (int8 quantization): they
        cannot concatenate the weights at each call as `_project_qkv` does, and one fused layer
        quantizes its input once instead of three times. Inference only: the copy is not trained.
        """
        if self.k_proj.in_features != self.d_model:
            raise ValueError("fuse_qkv is for self-attention: keys and values come from another width here")
        weight, bias = self._qkv_parameters()
        fused = nn.Linear(self.d_model, 3 * self.d_model, bias=bias is not None)
        fused = fused.to(device=weight.device, dtype=weight.dtype).requires_grad_(False)
        with torch.no_grad():
            fused.weight.copy_(weight)
            if bias is not None:
                fused.bias.copy_(bias)
        self.qkv_proj = fused

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
