"""Marian / OPUS-MT (Hugging Face `MarianMTModel`) into attnkit's `Translator`.

What differs from attnkit's own translators, and how it maps:
    - sinusoidal positions with the sines in the first half and the cosines in the second
      (`positional="sinusoidal_split"`; attnkit's own interleave them), not stored in the checkpoint;
    - SiLU ("swish") feed-forward layers, post-norm layers, embeddings scaled by sqrt(d_model);
    - one vocabulary shared by source, target and output layer, and a `final_logits_bias` on the
      output layer (`output_bias`);
    - the decoder starts from the pad id (`decoder_start_token_id`), which `Transformer` never masks
      at the first target position; eos is id 0, and pad must never be generated (attnkit's decoding
      suppresses the pad id).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.hf.checkpoint import Checkpoint, CheckpointImportError
from attnkit.models.translator import Translator
from attnkit.nn import TransformerConfig

ACTIVATIONS = {"swish": "silu", "silu": "silu", "gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh"}
# Older checkpoints save the sinusoidal tables and copies of the shared embedding.
IGNORED = [r"model\.(encoder|decoder)\.embed_positions\.weight"]


def marian_config(ckpt: Checkpoint) -> TransformerConfig:
    """The `TransformerConfig` of a Marian checkpoint; settings attnkit cannot reproduce are refused."""
    c = ckpt.config
    activation = ckpt.require("activation_function", ACTIVATIONS, "activation_function")
    if c.get("normalize_before") or c.get("add_final_layer_norm") or c.get("normalize_embedding"):
        raise CheckpointImportError(f"{ckpt.directory}: pre-norm Marian variants are not supported yet")
    if (
        not c.get("share_encoder_decoder_embeddings", True)
        or c.get("decoder_vocab_size", c["vocab_size"]) != c["vocab_size"]
    ):
        raise CheckpointImportError(f"{ckpt.directory}: separate source and target vocabularies are not supported yet")
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if c[a] != c[b]:
            raise CheckpointImportError(f"{ckpt.directory}: {a} {c[a]} differs from {b} {c[b]}; attnkit shares them")
    return TransformerConfig(
        src_vocab_size=c["vocab_size"],
        tgt_vocab_size=None,
        d_model=c["d_model"],
        n_heads=c["encoder_attention_heads"],
        n_encoder_layers=c["encoder_layers"],
        n_decoder_layers=c["decoder_layers"],
        d_ff=c["encoder_ffn_dim"],
        dropout=float(c.get("dropout", 0.1)),
        attention_dropout=float(c.get("attention_dropout", 0.0)),
        max_len=c["max_position_embeddings"],
        norm_first=False,
        tie_embeddings=True,
        pad_id=c["pad_token_id"],
        activation=ACTIVATIONS[activation],
        positional="sinusoidal_split",
        scale_embeddings=bool(c.get("scale_embedding", False)),
        eps=1e-5,
        output_bias=True,
    )


def load_marian(ckpt: Checkpoint) -> Translator:
    """A `Translator` holding the checkpoint's weights exactly; bos is the decoder start token."""
    config = marian_config(ckpt)
    shared = ckpt.take("model.shared.weight")
    for copy in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"):
        if ckpt.has(copy) and not torch.equal(ckpt.take(copy), shared):
            raise CheckpointImportError(f"{ckpt.directory}: {copy} differs from model.shared.weight; attnkit ties them")
    state: dict[str, Tensor] = {f"{name}.weight": shared for name in ("src_embed", "tgt_embed", "lm_head")}
    state["lm_head.bias"] = ckpt.take("final_logits_bias").reshape(-1)
    sublayers = {
        "encoder": {"self_attn": "self_attn", "self_attn_layer_norm": "attn_norm", "final_layer_norm": "ffn_norm"},
        "decoder": {
            "self_attn": "self_attn",
            "self_attn_layer_norm": "attn_norm",
            "encoder_attn": "cross_attn",
            "encoder_attn_layer_norm": "cross_attn_norm",
            "final_layer_norm": "ffn_norm",
        },
    }
    for stack, layers in (("encoder", config.n_encoder_layers), ("decoder", config.n_decoder_layers)):
        for i in range(layers):
            src, dst = f"model.{stack}.layers.{i}.", f"{stack}.layers.{i}."
            names = {**sublayers[stack], "fc1": "ffn.up_proj", "fc2": "ffn.down_proj"}
            for theirs, ours in names.items():
                parts = ("q_proj", "k_proj", "v_proj", "out_proj") if theirs.endswith("attn") else ("",)
                for part in parts:
                    t, o = (f"{theirs}.{part}", f"{ours}.{part}") if part else (theirs, ours)
                    for kind in ("weight", "bias"):
                        state[f"{dst}{o}.{kind}"] = ckpt.take(f"{src}{t}.{kind}")
    ckpt.finish(IGNORED)
    start = ckpt.setting("decoder_start_token_id", config.pad_id)
    model = Translator(config, bos_id=int(start), eos_id=int(ckpt.config["eos_token_id"]))
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    return model.eval()
