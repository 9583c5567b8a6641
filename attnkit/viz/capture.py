"""Record the attention weights of every `MultiHeadAttention` inside a model while it runs.

    with capture_attention(model) as captured:
        logits = model(ids)
    captured["body.encoder.layers.0.self_attn"].weights   # (B, H, T, S)

During cached decoding each step is one call, and `AttentionMap.weights` stacks the calls into the
full (T, S) map, equal to one forward pass over the final sequence, as long as the batch keeps its
rows (greedy decoding or sampling without an eos). A search that reorders or drops rows (beam
search, rows ending at eos) is mapped by one teacher-forced forward pass over its output instead.

Inside the context each attention module takes the written-out path (`reference_attention`, the
only one that has weights) and keeps what it computed; the model's outputs equal the fused path's
to float rounding. On leaving, the modules are as they were: no hook, wrapper or flag remains, so
the fused path runs with no overhead.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnkit.nn.multihead import MultiHeadAttention

_LAYER = re.compile(r"\.(\d+)(?:\.|$)")


@dataclass
class AttentionMap:
    """What one attention module computed inside a capture, one entry per call.

    Attributes:
        module: its name in the model, e.g. "decoder.layers.2.cross_attn".
        kind: "self", "causal" or "cross".
        layer: the index of the layer it belongs to (the last number in its name), or None.
        calls: the weights (B, H, T, S) of each call, in order (one per forward pass, or one per
            step of cached decoding).
        q, k, v: per call, the heads' queries (B, H, T, Dh), keys and values (B, H, S, Dh), kept
            for modules named in `capture_attention(keep_qkv=...)`; empty otherwise.
        masks: per call, the "may attend" mask as passed (broadcastable to (B, H, T, S)) or None,
            for the same modules as q, k, v; causality is in `kind`.
    """

    module: str
    kind: str
    layer: int | None
    calls: list[Tensor] = field(default_factory=list)
    q: list[Tensor] = field(default_factory=list)
    k: list[Tensor] = field(default_factory=list)
    v: list[Tensor] = field(default_factory=list)
    masks: list[Tensor | None] = field(default_factory=list)

    @property
    def weights(self) -> Tensor:
        """(B, H, T, S): the one call's weights, or the calls of cached decoding stacked along T.

        Each decoding step attends over all keys so far, so step t has S_t keys; the rows are
        right-padded with zeros to the last step's S, which is what a causal forward pass over the
        whole sequence gives (a key after the query has weight 0)."""
        if not self.calls:
            raise ValueError(f"{self.module}: nothing was recorded")
        if len(self.calls) == 1:
            return self.calls[0]
        width = max(w.size(-1) for w in self.calls)
        padded = [torch.nn.functional.pad(w, (0, width - w.size(-1))) for w in self.calls]
        return torch.cat(padded, dim=-2)


class AttentionCapture:
    """The maps recorded in one `capture_attention` context, by module name, in the order first called."""

    def __init__(self) -> None:
        self.maps: dict[str, AttentionMap] = {}

    def __getitem__(self, module: str) -> AttentionMap:
        try:
            return self.maps[module]
        except KeyError:
            raise KeyError(f"no attention module {module!r} recorded (recorded: {', '.join(self.maps)})") from None

    def __iter__(self) -> Iterator[AttentionMap]:
        return iter(self.maps.values())

    def __len__(self) -> int:
        return len(self.maps)

    def of_kind(self, kind: str) -> list[AttentionMap]:
        """The maps of one kind ("self", "causal" or "cross"), in the model's order."""
        return [m for m in self.maps.values() if m.kind == kind]

    def clear(self) -> None:
        """Forget what was recorded so far (keep capturing)."""
        for record in self.maps.values():
            for calls in (record.calls, record.q, record.k, record.v, record.masks):
                calls.clear()


def attention_modules(model: nn.Module) -> list[tuple[str, MultiHeadAttention]]:
    """Every `MultiHeadAttention` inside `model` with its name, in the model's order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MultiHeadAttention)]


@contextlib.contextmanager
def capture_attention(
    model: nn.Module, *, keep_qkv: bool | Iterable[str] = False, keep_grad: bool = False, reference_rows: int = 0
) -> Iterator[AttentionCapture]:
    """Record the weights of every attention module of `model` while inside the context.

    Args:
        model: any module holding `MultiHeadAttention`s (an attnkit model, or a part of one).
        keep_qkv: also keep each call's q, k, v and mask, for every module (True) or for the
            modules named (for the step-by-step view of one query).
        keep_grad: keep the weights' gradients after a backward pass (`map.calls[i].grad`), for
            gradient-weighted rollout; the weights then stay in the autograd graph.
        reference_rows: the first `reference_rows` rows of every batch keep the module's own (fused)
            path and are not recorded; what is recorded has the remaining B - reference_rows rows.
            A batch holding the same input twice then gives the model's fused output and its
            captured output in one pass (`explain`'s fidelity figure costs no second forward pass).

    Yields:
        an `AttentionCapture`, filled as the model runs.
    """
    modules = attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} holds no MultiHeadAttention to capture")
    wanted = {name for name, _ in modules} if keep_qkv is True else set(keep_qkv or ())
    unknown = wanted - {name for name, _ in modules}
    if unknown:
        raise ValueError(f"keep_qkv names no attention module: {', '.join(sorted(unknown))}")
    captured = AttentionCapture()
    shadowed = []  # (module, what its instance dict held under "_attend" before, or None)
    try:
        for name, module in modules:
            shadowed.append((module, module.__dict__.get("_attend")))
            module._attend = _recorder(captured, name, module, name in wanted, keep_grad, reference_rows)
        yield captured
    finally:
        for module, before in shadowed:
            if before is None:
                module.__dict__.pop("_attend", None)
            else:
                module._attend = before


def _recorder(
    captured: AttentionCapture, name: str, module: MultiHeadAttention, keep_qkv: bool, keep_grad: bool, reference: int
):
    """`module._attend` that takes the written-out path and records its weights under `name` (rows
    from `reference` on; the rows before it take the module's own path, unrecorded)."""
    original = module.__dict__.get("_attend") or MultiHeadAttention._attend.__get__(module)
    match = _LAYER.findall(name)
    layer = int(match[-1]) if match else None

    def attend(
        q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, causal: bool, cross: bool, weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        if reference:
            if q.size(0) <= reference:
                raise ValueError(f"reference_rows={reference} leaves none of the batch's {q.size(0)} rows to capture")
            rows = mask is not None and mask.dim() == 4 and mask.size(0) == q.size(0)  # else it broadcasts
            # Detached: rows are independent, so nothing recorded depends on the reference rows, and
            # a backward pass then skips their attention.
            fused, _ = original(
                q[:reference].detach(), k[:reference].detach(), v[:reference].detach(),
                mask[:reference] if rows else mask, causal=causal, cross=cross, weights=False,
            )  # fmt: skip
            q, k, v = q[reference:], k[reference:], v[reference:]
            mask = mask[reference:] if rows else mask
            out, found = written_out(q, k, v, mask, causal=causal, cross=cross, weights=weights)
            return torch.cat([fused, out]), found
        return written_out(q, k, v, mask, causal=causal, cross=cross, weights=weights)

    def written_out(
        q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, causal: bool, cross: bool, weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        if keep_grad and torch.is_grad_enabled() and not (q.requires_grad or k.requires_grad or v.requires_grad):
            # Nothing before this module records gradients (the parameters are frozen, as `explain`
            # freezes them): start the graph here, so that these weights and everything computed from
            # them are recorded. Gradients with respect to weights need no more than that.
            q = q.detach().requires_grad_()
        out, found = original(q, k, v, mask, causal=causal, cross=cross, weights=True)
        # Causal attention is over the same sequence even when keys come from another view of it
        # (SASRec's reference blocks take keys from the stream before the norm).
        kind = "causal" if causal else "cross" if cross else "self"
        record = captured.maps.setdefault(name, AttentionMap(name, kind, layer))
        if keep_grad and found.requires_grad:
            found.retain_grad()
        record.calls.append(found if keep_grad else found.detach())
        if keep_qkv:
            record.q.append(q.detach())
            record.k.append(k.detach())
            record.v.append(v.detach())
            record.masks.append(None if mask is None else mask.detach())
        return out, (found if weights else None)

    return attend
