"""ViT (Hugging Face `ViTModel`, `ViTForImageClassification`) into attnkit's `ViT`.

What differs in the checkpoint, and how it maps:
    - one (1, N + 1, D) position table, the [CLS] position first: split into `cls_pos` and `pos`;
    - the patch projection is a stride-P convolution, as attnkit's patch stem;
    - pre-norm layers with exact GELU and LayerNorm ε 1e-12 (`eps`), a final LayerNorm, a linear
      head on the [CLS] state; `ViTModel`'s pooler is not used by the classifier and is ignored.
The image processor's resize and mean/std normalisation go into the run (see `attnkit.hf.runs`).
"""

from __future__ import annotations

from torch import Tensor

from attnkit.hf.checkpoint import Checkpoint, CheckpointImportError
from attnkit.models.vit import ViT, ViTConfig

ACTIVATIONS = {"gelu": "gelu"}


def vit_config(ckpt: Checkpoint, num_labels: int | None = None) -> ViTConfig:
    """The `ViTConfig` of a ViT checkpoint (with `num_labels` classes for a new head)."""
    ckpt.require("hidden_act", ACTIVATIONS, "hidden_act")
    if not ckpt.setting("qkv_bias", True):
        raise CheckpointImportError(f"{ckpt.directory}: qkv_bias = false is not supported by attnkit's vit import")
    c = ckpt.config
    n_classes = num_labels or ckpt.head_size("classifier.weight")
    if not n_classes:
        raise CheckpointImportError(
            f"{ckpt.directory}: an image classifier needs --num-labels (no head in the checkpoint)"
        )
    return ViTConfig(
        image_size=c["image_size"],
        patch_size=c["patch_size"],
        in_channels=c.get("num_channels", 3),
        n_classes=n_classes,
        d_model=c["hidden_size"],
        n_heads=c["num_attention_heads"],
        n_layers=c["num_hidden_layers"],
        d_ff=c["intermediate_size"],
        dropout=float(c.get("hidden_dropout_prob", 0.0)),
        pooling="cls",
        stem="patch",
        eps=float(c.get("layer_norm_eps", 1e-12)),
    )


def load_vit(ckpt: Checkpoint, num_labels: int | None = None) -> ViT:
    """A `ViT` holding the checkpoint's weights exactly; with `num_labels` other than the checkpoint's
    (or for a `ViTModel`), a new zero-initialised head."""
    config = vit_config(ckpt, num_labels)
    p = ckpt.prefix(["vit."])
    table = ckpt.take(f"{p}embeddings.position_embeddings")  # (1, N + 1, D)
    if table.shape[1] != config.grid**2 + 1:
        raise CheckpointImportError(
            f"{ckpt.directory}: position_embeddings has {table.shape[1]} rows for a {config.grid}x{config.grid} grid"
        )
    state: dict[str, Tensor] = {
        "cls_token": ckpt.take(f"{p}embeddings.cls_token"),
        "cls_pos": table[:, :1],
        "pos": table[:, 1:],
        "patch_embed.weight": ckpt.take(f"{p}embeddings.patch_embeddings.projection.weight"),
        "patch_embed.bias": ckpt.take(f"{p}embeddings.patch_embeddings.projection.bias"),
        "encoder.final_norm.weight": ckpt.take(f"{p}layernorm.weight"),
        "encoder.final_norm.bias": ckpt.take(f"{p}layernorm.bias"),
    }
    names = {
        "layernorm_before": "attn_norm",
        "attention.attention.query": "self_attn.q_proj",
        "attention.attention.key": "self_attn.k_proj",
        "attention.attention.value": "self_attn.v_proj",
        "attention.output.dense": "self_attn.out_proj",
        "layernorm_after": "ffn_norm",
        "intermediate.dense": "ffn.up_proj",
        "output.dense": "ffn.down_proj",
    }
    ckpt.take_layers(state, config.n_layers, f"{p}encoder.layer.{{}}.", "encoder.layers.{}.", names)
    model = ViT(config)
    ignored = [rf"{p}pooler\..*"]
    if ckpt.head_size("classifier.weight") == config.n_classes:
        state["head.weight"], state["head.bias"] = ckpt.take("classifier.weight"), ckpt.take("classifier.bias")
    else:
        state["head.weight"], state["head.bias"] = model.head.weight.data, model.head.bias.data
        ignored.append(r"classifier\..*")
    ckpt.finish(ignored)
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    return model.eval()
