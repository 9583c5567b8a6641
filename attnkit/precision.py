"""Reduced-precision inference: a trained model in float32, bfloat16 or with int8 linear layers.

`--precision` of `attnkit predict`, `evaluate`, `generate` and `serve`; in Python
`open_run(run_dir, precision="int8")`, or `to_precision(model, "bf16")` on any model.

- fp32: the model's float32 weights as trained. On a CPU, each self-attention's q/k/v projections are
  held as one layer and every linear layer multiplies by a copy of its weight prepacked for oneDNN's
  kernels (`attnkit.nn.packed`): the same results to float rounding, decoding steps markedly faster,
  a second copy of the linear weights in memory.
- bf16: every weight and activation in bfloat16 (half the memory traffic of float32). Fast where
  the hardware computes in bfloat16: CUDA GPUs, and CPUs with AVX-512 BF16 or AMX; elsewhere PyTorch
  converts each product back to float32 and it runs slower than fp32 (`native_bf16` says which).
- int8: dynamic quantization (Jacob et al. 2018; `torch.ao.quantization.quantize_dynamic`): the
  weights of every `nn.Linear` stored as int8 with one scale per output row, activations quantized
  per batch as they arrive, products in int8 with int32 sums; embeddings, norms and attention's own
  products stay float32. A quarter of float32's weight traffic. CPU only (PyTorch's int8 kernels
  are FBGEMM's and oneDNN's). A tied output layer gets an int8 copy of the embedding table, which
  itself stays float32 for the lookups.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from attnkit.errors import UserError
from attnkit.nn.packed import pack_linear_layers, packing_available

__all__ = ["PRECISIONS", "check_precision", "model_dtype", "native_bf16", "to_precision"]

PRECISIONS = ("fp32", "bf16", "int8")


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether `device` computes bfloat16 products natively (CUDA, or a CPU with AVX-512 BF16 / AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_precision(precision: str, device: torch.device | str = "cpu") -> None:
    """Refuse an unknown precision, and int8 anywhere but on the CPU."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise UserError("--precision int8 runs on the CPU only (PyTorch's int8 kernels); use bf16 on a GPU")


def to_precision(model: nn.Module, precision: str, device: torch.device | str = "cpu") -> nn.Module:
    """`model` (in eval mode) for inference at `precision` ("fp32", "bf16" or "int8") on `device`.

    fp32 on a CPU fuses self-attention's q/k/v projections and packs the linear layers in place
    (`attnkit.nn.packed`); bf16 converts the model in place; int8 returns a copy whose `nn.Linear`
    layers are dynamically quantized (CPU only). Inputs keep their types: integer ids as they are, float inputs (images)
    are cast by the run to `model_dtype(model)`.
    """
    check_precision(precision, device)
    model = model.eval()
    if precision == "fp32":
        if torch.device(device).type == "cpu" and packing_available():
            _fuse_self_attention(model)
            pack_linear_layers(model)
        return model
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        model = copy.deepcopy(model).cpu()
        _fuse_self_attention(model)  # one quantized layer in place of three (see fuse_qkv)
        with warnings.catch_warnings():
            # PyTorch marks torch.ao.quantization deprecated in favour of torchao; it remains the
            # int8 path whose kernels (FBGEMM / oneDNN) run in eager mode on a CPU.
            warnings.filterwarnings("ignore", message=r"(?s).*quantize_per_(tensor|channel).*deprecated")
            warnings.filterwarnings("ignore", message=r"(?s).*torch\.ao\.quantization is deprecated")
            # in place: `model` is this function's own copy already
            return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return model


def _fuse_self_attention(model: nn.Module) -> None:
    """`MultiHeadAttention.fuse_qkv` on every self-attention of `model` (in place)."""
    from attnkit.nn.multihead import MultiHeadAttention

    for name, module in model.named_modules():
        if isinstance(module, MultiHeadAttention) and module.qkv_proj is None and not name.endswith("cross_attn"):
            module.fuse_qkv()


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of `model`'s weights (float32 for an int8 model: its other layers' dtype)."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32
