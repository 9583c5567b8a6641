"""GPT-2 (Hugging Face `GPT2Model` / `GPT2LMHeadModel`) into attnkit's `GPT`.

What differs in the checkpoint, and how it maps:
    - GPT-2's `Conv1D` stores weights as (in, out), the transpose of `nn.Linear`'s (out, in);
    - `attn.c_attn` holds the query, key and value projections side by side (D, 3D): split in three;
    - `activation_function` "gelu_new" is GELU's tanh approximation (`gelu_tanh`);
    - learned positions (`wpe`), pre-norm blocks, a final norm (`ln_f`) and an output layer tied to
      the token embedding (`lm_head.weight`, when saved, equals `wte.weight`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.hf.checkpoint import Checkpoint, CheckpointImportError
from attnkit.models.gpt import GPT, GPTConfig

ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
# Buffers that older transformers versions saved with each block (the causal mask): not weights.
IGNORED = [r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)"]


def gpt2_config(ckpt: Checkpoint) -> GPTConfig:
    """The `GPTConfig` of a GPT-2 checkpoint; settings attnkit cannot reproduce are refused by name."""
    activation = ckpt.require("activation_function", ACTIVATIONS, "activation_function")
    for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if ckpt.setting(flag, False):
            raise CheckpointImportError(f"{ckpt.directory}: {flag} = true is not supported by attnkit's gpt2 import")
    if not ckpt.setting("scale_attn_weights", True):
        raise CheckpointImportError(f"{ckpt.directory}: scale_attn_weights = false is not supported")
    return GPTConfig(
        vocab_size=ckpt.config["vocab_size"],
        max_len=ckpt.config["n_positions"],
        d_model=ckpt.config["n_embd"],
        n_heads=ckpt.config["n_head"],
        n_layers=ckpt.config["n_layer"],
        d_ff=ckpt.setting("n_inner"),
        dropout=float(ckpt.setting("resid_pdrop", 0.0)),
        activation=ACTIVATIONS[activation],
        bias=True,
        eps=float(ckpt.setting("layer_norm_epsilon", 1e-5)),
    )


def load_gpt2(ckpt: Checkpoint) -> GPT:
    """A `GPT` holding the checkpoint's weights exactly."""
    config = gpt2_config(ckpt)
    p = ckpt.prefix(["transformer."])
    state: dict[str, Tensor] = {
        "tok_embed.weight": ckpt.take(f"{p}wte.weight"),
        "pos.weight": ckpt.take(f"{p}wpe.weight"),
    }
    state["lm_head.weight"] = state["tok_embed.weight"]
    if ckpt.has("lm_head.weight") and not torch.equal(ckpt.take("lm_head.weight"), state["tok_embed.weight"]):
        raise CheckpointImportError(
            f"{ckpt.directory}: lm_head.weight is not tied to wte.weight; attnkit's GPT ties them"
        )
    for i in range(config.n_layers):
        src, dst = f"{p}h.{i}.", f"blocks.layers.{i}."
        for name, ours in (("ln_1", "attn_norm"), ("ln_2", "ffn_norm")):
            state[f"{dst}{ours}.weight"] = ckpt.take(f"{src}{name}.weight")
            state[f"{dst}{ours}.bias"] = ckpt.take(f"{src}{name}.bias")
        weights = ckpt.take(f"{src}attn.c_attn.weight").t()  # (3D, D) as nn.Linear stores it
        biases = ckpt.take(f"{src}attn.c_attn.bias")
        for part, weight, bias in zip("qkv", weights.chunk(3), biases.chunk(3), strict=True):
            state[f"{dst}self_attn.{part}_proj.weight"] = weight
            state[f"{dst}self_attn.{part}_proj.bias"] = bias
        for name, ours in (
            ("attn.c_proj", "self_attn.out_proj"),
            ("mlp.c_fc", "ffn.up_proj"),
            ("mlp.c_proj", "ffn.down_proj"),
        ):
            state[f"{dst}{ours}.weight"] = ckpt.take(f"{src}{name}.weight").t()
            state[f"{dst}{ours}.bias"] = ckpt.take(f"{src}{name}.bias")
    state["blocks.final_norm.weight"] = ckpt.take(f"{p}ln_f.weight")
    state["blocks.final_norm.bias"] = ckpt.take(f"{p}ln_f.bias")
    ckpt.finish(IGNORED)
    model = GPT(config)
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    return model.eval()
