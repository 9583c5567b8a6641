"""Linear layers with weights prepacked for the CPU's matrix kernels (inference).

PyTorch's eager `F.linear` on a CPU multiplies by the weight as `nn.Linear` stores it, (out, in) row by
row, through a general matrix product that re-reads it in that layout at every call. oneDNN (the CPU
library PyTorch ships) can instead reorder a weight once into the blocked layout its kernels stream
fastest; PyTorch's own compiler does this when it freezes a CPU model (Inductor's `freezing`). For a
decoding step, whose products are one row (batch 1) or a few rows against every weight, reading the
weights is the step's cost, and the prepacked layout reads them markedly faster
(`docs/experiments/prepacked-linear.md` has the measurements).

`pack_linear_layers(model)` swaps every float32 `nn.Linear` of a model for a `PackedLinear`: the same
parameters (names, tying and `state_dict` unchanged) plus a packed copy used for inference. Wherever
the packed product does not apply, the layer computes `F.linear` exactly as `nn.Linear` does:
gradients being recorded, another device or dtype, a weight changed since packing (repacked at the next
inference call), or a graph being traced or compiled (exporters and `torch.compile` see plain
`nn.Linear` arithmetic and do their own packing). The packed copy costs a second copy of each weight.

One exception inside `torch.compile` (a compiled decoding step, `attnkit generate --compile`): a product
of one row is written as a multiply-and-sum over the weight's rows, which Inductor turns into a single
vectorised reduction that streams the weight once, faster at one row than any matrix kernel it would
call (`docs/experiments/compiled-one-row-products.md`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PackedLinear", "pack_linear_layers", "packing_available"]

# Smaller weights stay with F.linear: the packed product's fixed cost per call (about 13 µs here,
# against 3 µs) outweighs its faster reads below about 256 x 1024 (see the experiment report).
_MIN_ELEMENTS = 1 << 18
# The row count oneDNN's reorder is told to expect. Measured over batch 1 to 64 of decoding-sized
# products (the experiment report above), 8 serves one row nearly as well as a packing for one row,
# and several rows far better.
_EXPECTED_ROWS = 8


def packing_available() -> bool:
    """Whether this PyTorch build has oneDNN's CPU linear kernels (x86-64 and most Arm builds)."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def _pack(weight: Tensor) -> Tensor:
    """weight (out, in) -> oneDNN's opaque packed copy of it."""
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _EXPECTED_ROWS)


def _product(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    """x (..., in) times a packed weight, plus bias -> (..., out)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _cpu_float32_inference(x: Tensor, weight: Tensor) -> bool:
    """Float32 on the CPU with nothing to differentiate: where either faster product may stand in."""
    return not (
        (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))  # no backward here
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or x.device.type != "cpu"
        or weight.device.type != "cpu"  # the packed copy lives on the CPU
    )


def _compiling_one_row(x: Tensor, weight: Tensor) -> bool:
    """Inside `torch.compile` (not an export, which keeps `nn.Linear`'s arithmetic), one float32 CPU
    row and nothing to differentiate: the case `_row_product` is for."""
    return (
        torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and _cpu_float32_inference(x, weight)
        and x.shape[:-1].numel() == 1
    )


def _row_product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (..., in) with one row, times weight (out, in)ᵀ, plus bias -> (..., out), as an elementwise
    product summed over `in`: compiled, one pass over the weight, each output row's dot product in
    registers (Inductor's reduction), where a matrix kernel called with one row reads it slower."""
    out = (x.unsqueeze(-2) * weight).sum(-1)  # (..., 1, in) * (out, in) -> (..., out)
    return out if bias is None else out + bias


def _version(weight: Tensor) -> tuple[int, int]:
    """What identifies a weight's current values: its storage and in-place update count."""
    return weight.data_ptr(), weight._version


class PackedLinear(nn.Linear):
    """An `nn.Linear` that multiplies by a oneDNN-packed copy of its weight when it only infers.

    Build one with `PackedLinear.from_linear(linear)`, which shares `linear`'s parameters. Input
    (..., in_features) -> output (..., out_features), equal to `nn.Linear`'s to float rounding (the
    kernels sum in another order).
    """

    packed: Tensor | None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedLinear:
        """A PackedLinear over `linear`'s own weight and bias tensors (tying to other modules kept)."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight, layer.bias = linear.weight, linear.bias  # the same Parameter objects
        layer.train(linear.training)
        layer.packed, layer._packed_for = None, None
        layer.repack()
        return layer

    def repack(self) -> None:
        """Pack the current weight (done on creation, and when an inference call finds it changed)."""
        self.packed, self._packed_for = _pack(self.weight), _version(self.weight)

    def _packed_applies(self, x: Tensor) -> bool:
        return (
            _cpu_float32_inference(x, self.weight) and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) -> (..., out_features)."""
        if _compiling_one_row(x, self.weight):
            return _row_product(x, self.weight, self.bias)
        if not self._packed_applies(x):
            return F.linear(x, self.weight, self.bias)
        if self._packed_for != _version(self.weight):
            self.repack()
        return _product(x, self.packed, self.bias)

    def __deepcopy__(self, memo: dict) -> nn.Linear:
        """A plain `nn.Linear` copy (the packed copy is derived data; pack the copy again if wanted)."""
        import copy

        linear = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(linear)
        linear.in_features, linear.out_features = self.in_features, self.out_features
        linear.weight = copy.deepcopy(self.weight, memo)
        linear.bias = copy.deepcopy(self.bias, memo)
        linear.train(self.training)
        memo[id(self)] = linear
        return linear


def pack_linear_layers(model: nn.Module, min_elements: int | None = None) -> int:
    """Swap every float32 CPU `nn.Linear` inside `model` with at least `min_elements` weights (in place)
    for a `PackedLinear` over the same parameters. Returns how many layers were packed (0 where
    `packing_available()` is False). Below about 256 x 1024 weights `F.linear` is faster at decoding's
    row counts, hence the default (None)."""
    if not packing_available():
        return 0
    min_elements = _MIN_ELEMENTS if min_elements is None else min_elements
    swaps = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is not nn.Linear:
                continue
            weight = child.weight
            if weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.numel() >= min_elements:
                swaps.append((parent, name, child))
    for parent, name, child in swaps:
        setattr(parent, name, PackedLinear.from_linear(child))
    return len(swaps)
