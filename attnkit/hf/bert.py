"""BERT (Hugging Face `BertModel`, `BertForSequenceClassification`, `BertForMaskedLM`) into attnkit's
`TextEncoder`, `TextClassifier` and `MaskedLanguageModel`.

What BERT has, and where it goes:
    - word, position and segment (token type) embeddings, summed, then a LayerNorm (`embed_norm`);
    - post-norm encoder layers with exact GELU; every LayerNorm's ε is 1e-12 (`eps`);
    - the pooler, a dense layer and tanh on the [CLS] state (`TextClassifier(pooling="pooler")`);
    - the masked-LM head: a transform (dense, GELU, LayerNorm) and an output layer tied to the word
      embedding, with its own bias.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.hf.checkpoint import Checkpoint, CheckpointImportError
from attnkit.models.classifier import TextClassifier
from attnkit.models.mlm import MaskedLanguageModel
from attnkit.models.text_encoder import TextEncoder, TextEncoderConfig

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
# Not weights (older versions saved the position ids), or heads attnkit does not use: next-sentence
# prediction of BertForPreTraining, and the pooler where the model asked for has none.
IGNORED = [r"(bert\.)?embeddings\.position_ids", r"cls\.seq_relationship\..*"]


def bert_config(ckpt: Checkpoint) -> TextEncoderConfig:
    """The `TextEncoderConfig` of a BERT checkpoint; settings attnkit cannot reproduce are refused."""
    activation = ckpt.require("hidden_act", ACTIVATIONS, "hidden_act")
    for flag in ("is_decoder", "add_cross_attention"):
        if ckpt.setting(flag, False):
            raise CheckpointImportError(f"{ckpt.directory}: {flag} = true is not supported by attnkit's bert import")
    ckpt.require("position_embedding_type", ["absolute", None], "position_embedding_type")
    c = ckpt.config
    return TextEncoderConfig(
        vocab_size=c["vocab_size"],
        d_model=c["hidden_size"],
        n_heads=c["num_attention_heads"],
        n_layers=c["num_hidden_layers"],
        d_ff=c["intermediate_size"],
        dropout=float(c.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(c.get("attention_probs_dropout_prob", 0.1)),
        max_len=c["max_position_embeddings"],
        norm_first=False,
        activation=ACTIVATIONS[activation],
        positional="learned",
        pad_id=int(c.get("pad_token_id") or 0),
        eps=float(c.get("layer_norm_eps", 1e-12)),
        type_vocab_size=int(c.get("type_vocab_size", 2)),
        embed_norm=True,
    )


def encoder_state(ckpt: Checkpoint, config: TextEncoderConfig, prefix: str, into: str) -> dict[str, Tensor]:
    """The encoder's tensors under attnkit's names (`into` + "embed.weight", ...)."""
    e = f"{prefix}embeddings."
    state = {
        f"{into}embed.weight": ckpt.take(f"{e}word_embeddings.weight"),
        f"{into}pos.weight": ckpt.take(f"{e}position_embeddings.weight"),
        f"{into}type_embed.weight": ckpt.take(f"{e}token_type_embeddings.weight"),
        f"{into}embed_norm.weight": ckpt.take(f"{e}LayerNorm.weight"),
        f"{into}embed_norm.bias": ckpt.take(f"{e}LayerNorm.bias"),
    }
    names = {
        "attention.self.query": "self_attn.q_proj",
        "attention.self.key": "self_attn.k_proj",
        "attention.self.value": "self_attn.v_proj",
        "attention.output.dense": "self_attn.out_proj",
        "attention.output.LayerNorm": "attn_norm",
        "intermediate.dense": "ffn.up_proj",
        "output.dense": "ffn.down_proj",
        "output.LayerNorm": "ffn_norm",
    }
    ckpt.take_layers(state, config.n_layers, f"{prefix}encoder.layer.{{}}.", f"{into}encoder.layers.{{}}.", names)
    return state


def load_bert(ckpt: Checkpoint, task: str | None = None, num_labels: int | None = None) -> nn.Module:
    """The attnkit model of a BERT checkpoint, holding its weights exactly.

    BertForMaskedLM -> `MaskedLanguageModel`; BertForSequenceClassification -> `TextClassifier` with
    BERT's pooler; BertModel -> `TextEncoder`, or with task "classify" a `TextClassifier` whose pooler
    comes from the checkpoint and whose head (`num_labels` classes) is new. `task` "mlm" or "classify"
    asks for that model whatever the checkpoint's head (a head the checkpoint lacks is new)."""
    config = bert_config(ckpt)
    prefix = ckpt.prefix(["bert."])
    has_mlm, has_classifier = ckpt.has("cls.predictions.bias"), ckpt.has("classifier.weight")
    task = task or ("mlm" if has_mlm else "classify" if has_classifier else None)
    ignored = list(IGNORED)
    if task is None:
        model: nn.Module = TextEncoder(config)
        state = encoder_state(ckpt, config, prefix, "")
        ignored += [rf"{prefix}pooler\..*"]
    elif task == "mlm":
        model = MaskedLanguageModel(config)
        state = encoder_state(ckpt, config, prefix, "body.")
        state["lm_head.weight"] = state["body.embed.weight"]
        if has_mlm:
            t = "cls.predictions.transform."
            for theirs, ours in (("dense", "transform.0"), ("LayerNorm", "transform.2")):
                state[f"{ours}.weight"] = ckpt.take(f"{t}{theirs}.weight")
                state[f"{ours}.bias"] = ckpt.take(f"{t}{theirs}.bias")
            state["lm_head.bias"] = ckpt.take("cls.predictions.bias")
            _check_tied(ckpt, "cls.predictions.decoder.weight", state["lm_head.weight"])
            _check_tied(ckpt, "cls.predictions.decoder.bias", state["lm_head.bias"])
        else:
            state.update({k: v for k, v in model.state_dict().items() if not k.startswith("body.")})
        ignored += [rf"{prefix}pooler\..*", r"classifier\..*"]
    elif task == "classify":
        labels = ckpt.head_size("classifier.weight")
        n_classes = num_labels or labels
        if not n_classes:
            raise CheckpointImportError(
                f"{ckpt.directory}: a classifier needs --num-labels (the checkpoint has no head)"
            )
        if ckpt.setting("problem_type") == "multi_label_classification":
            raise CheckpointImportError(f"{ckpt.directory}: multi-label BERT classifiers are not supported yet")
        model = TextClassifier(
            config,
            n_classes,
            pooling="pooler",
            head_dropout=float(ckpt.setting("classifier_dropout") or config.dropout),
        )
        state = encoder_state(ckpt, config, prefix, "body.")
        for kind in ("weight", "bias"):
            state[f"pooler.0.{kind}"] = ckpt.take(f"{prefix}pooler.dense.{kind}")
        if has_classifier and num_labels in (None, labels):
            state["head.weight"], state["head.bias"] = ckpt.take("classifier.weight"), ckpt.take("classifier.bias")
        else:  # a new head for the user's labels, initialised as BERT's are
            nn.init.normal_(model.head.weight, std=float(ckpt.setting("initializer_range", 0.02)))
            nn.init.zeros_(model.head.bias)
            state["head.weight"], state["head.bias"] = model.head.weight.data, model.head.bias.data
            ignored += [r"classifier\..*"]
        ignored += [r"cls\..*"]
    else:
        raise CheckpointImportError(f"a BERT checkpoint imports as an mlm or classify model, not {task!r}")
    ckpt.finish(ignored)
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    return model.eval()


def _check_tied(ckpt: Checkpoint, name: str, ours: Tensor) -> None:
    """Older checkpoints also store the tied decoder; it must equal what attnkit ties it to."""
    if ckpt.has(name) and not torch.equal(ckpt.take(name), ours):
        raise CheckpointImportError(f"{ckpt.directory}: {name} is not tied as BERT ties it; attnkit cannot hold it")
