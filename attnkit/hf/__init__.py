"""Pretrained Hugging Face checkpoints into attnkit's own modules.

    model = attnkit.hf.load("path/to/bert-base-uncased")   # a save_pretrained folder

reads config.json and safetensors only (never a pickle), dispatches on `model_type` and returns the
attnkit model holding the checkpoint's weights exactly: GPT-2 -> `GPT`, BERT -> `TextEncoder`,
`TextClassifier` or `MaskedLanguageModel`, ViT -> `ViT`, Marian (OPUS-MT) -> `Translator`.
`transformers` is not needed for this;
`attnkit import hf` also writes the tokenizer and preprocessing into an ordinary run directory
(`attnkit.hf.runs`).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from attnkit.hf.checkpoint import Checkpoint, CheckpointImportError

SUPPORTED = ("bert", "gpt2", "marian", "vit")

__all__ = ["SUPPORTED", "Checkpoint", "CheckpointImportError", "load"]


def load(source: Path | str | Checkpoint, *, task: str | None = None, num_labels: int | None = None) -> nn.Module:
    """The attnkit model of a `save_pretrained` folder, in eval mode.

    Args:
        source: the folder (config.json, model.safetensors), or a `Checkpoint` read from it.
        task: for BERT, "classify" or "mlm" to ask for that model whatever head the checkpoint has.
        num_labels: classes of a new classification head (BERT, ViT) when the checkpoint has none
            or another number.
    """
    ckpt = source if isinstance(source, Checkpoint) else Checkpoint(source)
    if ckpt.model_type == "gpt2":
        from attnkit.hf.gpt2 import load_gpt2

        if task not in (None, "lm"):
            raise CheckpointImportError(f"a gpt2 checkpoint imports as an lm model, not {task!r}")
        return load_gpt2(ckpt)
    if ckpt.model_type == "bert":
        from attnkit.hf.bert import load_bert

        return load_bert(ckpt, task, num_labels)
    if ckpt.model_type == "vit":
        from attnkit.hf.vit import load_vit

        if task not in (None, "vision"):
            raise CheckpointImportError(f"a vit checkpoint imports as a vision model, not {task!r}")
        return load_vit(ckpt, num_labels)
    if ckpt.model_type == "marian":
        from attnkit.hf.marian import load_marian

        if task not in (None, "translate"):
            raise CheckpointImportError(f"a marian checkpoint imports as a translate model, not {task!r}")
        return load_marian(ckpt)
    raise CheckpointImportError(
        f"{ckpt.directory}: model_type {ckpt.model_type!r} is not supported (supported: {', '.join(SUPPORTED)})"
    )
