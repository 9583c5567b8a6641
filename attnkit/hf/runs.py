"""`attnkit import hf SRC --out RUN_DIR`: a Hugging Face checkpoint as an ordinary attnkit run directory.

The run holds what `attnkit train` would have written: config.json (task, options, model configuration,
training settings, plus "source", where it came from), model.safetensors and what the task needs to
read inputs: the tokenizer (tokenizer.json, used as it is) or the image processor's size and
normalisation. So `predict`, `evaluate`, `generate` and `explain` work on it unchanged.

    GPT-2 -> an lm run (byte-level BPE tokenizer.json)
    BERT  -> a classify run (BertForSequenceClassification, or with --num-labels any BERT: a new head)
             or an mlm run (BertForMaskedLM, BertForPreTraining); the WordPiece tokenizer.json as it
             is, framing texts "[CLS] ... [SEP]" as BERT does
    ViT   -> a vision run (classes from id2label; mean and std from preprocessor_config.json)
    Marian -> a translate run (source.spm, target.spm and vocab.json; its start and end ids recorded
             as "specials")
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from attnkit.engine import Dist, TrainConfig
from attnkit.engine.checkpoint import save_weights_atomic
from attnkit.hf import load
from attnkit.hf.checkpoint import Checkpoint, CheckpointImportError
from attnkit.tasks.rundir import copy_files, prepare_new_run, run_config, write_new_run

TASKS = {"gpt2": ("lm",), "vit": ("vision",), "bert": ("classify", "mlm"), "marian": ("translate",)}


def import_run(
    source: Path | str, out: Path | str, *, task: str | None = None, num_labels: int | None = None, log: Any = print
) -> Path:
    """Write the run directory `out` from the `save_pretrained` folder `source`; returns `out`.

    Args:
        task: the task the run is for (default: the one the checkpoint's type and head imply).
        num_labels: classes of a new classification head, when the checkpoint has none or another number.
    """
    ckpt = Checkpoint(resolve_source(source, log))
    allowed = TASKS.get(ckpt.model_type)
    if allowed is None:
        raise CheckpointImportError(
            f"{ckpt.directory}: model_type {ckpt.model_type!r} cannot be imported as a run"
            f" (supported: {', '.join(sorted(TASKS))})"
        )
    if task is None and ckpt.model_type == "bert":
        task = "classify" if ckpt.has("classifier.weight") or num_labels else "mlm"
    task = task or allowed[0]
    if task not in allowed:
        raise CheckpointImportError(f"a {ckpt.model_type} checkpoint imports as {' or '.join(allowed)}, not {task}")
    out = Path(out)
    prepare_new_run(out)  # refuses a directory that holds a run, before anything is converted
    model = load(ckpt, task=task, num_labels=num_labels)
    origin = {"from": str(ckpt.directory.resolve()), "model_type": ckpt.model_type}
    origin["architectures"] = ckpt.setting("architectures")
    if task == "lm":
        config, files = _lm_run(ckpt, model, out)
    elif task in ("classify", "mlm"):
        config, files = _encoder_run(ckpt, model, out, task)
    elif task == "translate":
        config, files = _translate_run(ckpt, model, out)
    else:
        config, files = _vision_run(ckpt, model, out)
    config["source"] = origin
    from attnkit.tasks.registry import get_task

    # The same checks `open_run` makes, before anything is written: an import never leaves a run
    # directory that cannot be opened.
    get_task(task).run_class.check_config(out / "config.json", config)

    def write_files(run_dir: Path) -> None:
        files(run_dir)
        save_weights_atomic(model, run_dir / "model.safetensors")

    write_new_run(out, Dist(), config, files=write_files)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"imported {ckpt.model_type} ({parameters:,} parameters) from {ckpt.directory} as a {task} run in {out}")
    return out


HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "*.spm", "vocab.json"]
HUB_FILES += ["tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json", "generation_config.json"]


def resolve_source(source: Path | str, log: Any = print) -> Path:
    """`source` itself when it is a folder; else a hub id ("google/vit-base-patch16-224") whose config,
    safetensors and tokenizer files `huggingface_hub` downloads (never its pickles)."""
    path = Path(source)
    if path.exists():
        return path
    name = str(source)
    if name.count("/") > 1 or name.startswith((".", "/")) or not name.strip():
        raise CheckpointImportError(f"{source}: no such folder")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointImportError(
            f"{source}: no such folder; to download it as a hub id install huggingface_hub (pip install 'attnkit[hf]')"
        ) from None
    log(f"{source}: not a folder here; downloading it from the Hugging Face hub")
    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=HUB_FILES))
    except Exception as error:  # network, authorisation, unknown repository: all one line for the user
        reason = " ".join(str(error).split())  # one line, whatever the library wrote
        raise CheckpointImportError(f"{source}: no such folder, and the hub download failed ({reason})") from None


def _tokenizer_file(ckpt: Checkpoint) -> Path:
    path = ckpt.directory / "tokenizer.json"
    if not path.is_file():
        raise CheckpointImportError(
            f"{ckpt.directory}: no tokenizer.json; save the (fast) tokenizer beside the model with"
            " tokenizer.save_pretrained(DIR)"
        )
    return path


def _lm_run(ckpt: Checkpoint, model: nn.Module, out: Path) -> tuple[dict[str, Any], Any]:
    from attnkit.tasks.lm import TRAIN_DEFAULTS, LmOptions

    tokenizer = _tokenizer_file(ckpt)
    c = model.config
    options = LmOptions(
        out=str(out),
        tokenizer="bytebpe",
        vocab_size=c.vocab_size,
        max_len=c.max_len,
        **{f.name: getattr(c, f.name) for f in dataclasses.fields(LmOptions) if f.name in _MODEL_FIELDS},
    )
    train = TrainConfig(**TRAIN_DEFAULTS)
    return run_config("lm", options, c, train), copy_files(tokenizer.parent, [tokenizer.name])


def _encoder_run(ckpt: Checkpoint, model: nn.Module, out: Path, task: str) -> tuple[dict[str, Any], Any]:
    from attnkit.data.tokenizer import PAD_ID, framing, load_tokenizer

    path = _tokenizer_file(ckpt)
    tokenizer = load_tokenizer(path)
    c = model.body.config
    pad = tokenizer.token_to_id("[PAD]")
    if pad != PAD_ID or c.pad_id != PAD_ID:
        raise CheckpointImportError(
            f"{ckpt.directory}: [PAD] has id {pad} in the tokenizer and {c.pad_id} in the model; attnkit pads with 0"
        )
    prefix, _ = framing(tokenizer)
    if not prefix:
        raise CheckpointImportError(f"{path}: the tokenizer does not put a [CLS] token before a text")
    shared = {f: getattr(c, f) for f in ("d_model", "n_heads", "n_layers", "d_ff", "dropout", "attention_dropout")}
    shared.update(out=str(out), tokenizer="wordpiece", vocab_size=c.vocab_size, max_len=c.max_len)
    shared.update(norm_first=c.norm_first, lowercase=_lowercases(tokenizer))
    if task == "classify":
        from attnkit.tasks.classify import TRAIN_DEFAULTS, ClassifyOptions

        options: Any = ClassifyOptions(**shared, pooling="pooler")
        extra = {"classes": _classes(ckpt, model.head.out_features)}
    else:
        from attnkit.tasks.mlm import TRAIN_DEFAULTS, MlmOptions

        options, extra = MlmOptions(**shared), {}
    return run_config(task, options, c, TrainConfig(**TRAIN_DEFAULTS), **extra), copy_files(path.parent, [path.name])


def _translate_run(ckpt: Checkpoint, model: nn.Module, out: Path) -> tuple[dict[str, Any], Any]:
    from attnkit.data.marian_tokenizer import FILES, MarianTokenizer
    from attnkit.tasks.translate import TRAIN_DEFAULTS, TranslateOptions

    missing = [name for name in FILES if not (ckpt.directory / name).is_file()]
    if missing:
        raise CheckpointImportError(
            f"{ckpt.directory}: no {missing[0]}; save the Marian tokenizer beside the model with"
            " tokenizer.save_pretrained(DIR) (it writes source.spm, target.spm and vocab.json)"
        )
    tokenizer = MarianTokenizer(ckpt.directory)  # readable, or one line saying why not
    if tokenizer.get_vocab_size() > model.config.src_vocab_size:
        raise CheckpointImportError(f"{ckpt.directory}: vocab.json has more tokens than the model's vocabulary")
    languages = _json(ckpt.directory / "tokenizer_config.json")
    generation = _json(ckpt.directory / "generation_config.json")
    c = model.config
    extra_len = 50
    options = TranslateOptions(
        out=str(out),
        src_lang=str(languages.get("source_lang") or "src"),
        tgt_lang=str(languages.get("target_lang") or "tgt"),
        vocab_size=c.src_vocab_size,
        max_len=c.max_len - extra_len - 2,
        extra_len=extra_len,
        beam=int(generation.get("num_beams") or 4),
        alpha=float(generation.get("length_penalty", 1.0)),
        length_penalty="length",  # transformers' form, with the checkpoint's own exponent
        **{f: getattr(c, f) for f in ("d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "d_ff")},
        **{f: getattr(c, f) for f in ("dropout", "attention_dropout", "norm_first")},
    )
    config = run_config(
        "translate", options, c, TrainConfig(**TRAIN_DEFAULTS), specials={"bos": model.bos_id, "eos": model.eos_id}
    )

    return config, copy_files(ckpt.directory, FILES)


def _json(path: Path) -> dict[str, Any]:
    """A JSON object from an optional file beside the checkpoint ({} when absent or not an object)."""
    try:
        found = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return found if isinstance(found, dict) else {}


def _lowercases(tokenizer: Any) -> bool:
    """Whether the tokenizer lowercases (an uncased BERT's does): recorded in the run's options."""
    return tokenizer.normalizer is not None and tokenizer.normalizer.normalize_str("A") == "a"


_MODEL_FIELDS = ("d_model", "n_heads", "n_layers", "d_ff", "dropout", "positional", "activation", "bias", "pooling")


def _vision_run(ckpt: Checkpoint, model: nn.Module, out: Path) -> tuple[dict[str, Any], Any]:
    from attnkit.tasks.vision import TRAIN_DEFAULTS, VisionOptions

    c = model.config
    processor = _processor(ckpt)
    size = processor.get("size") or {}
    side = size.get("height", size.get("shortest_edge", c.image_size)) if isinstance(size, dict) else size
    if side != c.image_size or (isinstance(size, dict) and size.get("width", side) != side):
        raise CheckpointImportError(
            f"{ckpt.directory}: the image processor resizes to {size}, the model takes {c.image_size}x{c.image_size}"
        )
    channels = c.in_channels
    mean = _per_channel(processor.get("image_mean", [0.5] * channels), channels, "image_mean", ckpt)
    std = _per_channel(processor.get("image_std", [0.5] * channels), channels, "image_std", ckpt)
    if not processor.get("do_normalize", True):
        mean, std = [0.0] * channels, [1.0] * channels
    options = VisionOptions(
        out=str(out),
        image_size=c.image_size,
        valid_size=0,
        augment="none",
        patch_size=c.patch_size,
        **{f.name: getattr(c, f.name) for f in dataclasses.fields(VisionOptions) if f.name in _MODEL_FIELDS},
    )
    train = TrainConfig(**TRAIN_DEFAULTS)
    config = run_config(
        "vision", options, c, train, classes=_classes(ckpt, c.n_classes), normalize={"mean": mean, "std": std}
    )
    return config, lambda _run_dir: None


def _processor(ckpt: Checkpoint) -> dict[str, Any]:
    path = ckpt.directory / "preprocessor_config.json"
    if not path.is_file():
        raise CheckpointImportError(
            f"{ckpt.directory}: no preprocessor_config.json (the image processor's size and normalisation);"
            " save it beside the model with image_processor.save_pretrained(DIR)"
        )
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointImportError(f"{path}: cannot be read as JSON ({error})") from None
    if not isinstance(found, dict):
        raise CheckpointImportError(f"{path}: not an image processor configuration")
    if found.get("do_rescale", True) and abs(float(found.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise CheckpointImportError(f"{path}: rescale_factor {found['rescale_factor']} is not 1/255")
    return found


def _per_channel(values: Any, channels: int, name: str, ckpt: Checkpoint) -> list[float]:
    values = [values] * channels if isinstance(values, (int, float)) else values
    if not (isinstance(values, list) and len(values) == channels):
        raise CheckpointImportError(f"{ckpt.directory}: {name} must give one value per channel, got {values!r}")
    return [float(v) for v in values]


def _classes(ckpt: Checkpoint, n_classes: int) -> list[str]:
    """Class names in label order: config.json's id2label where it names every class, else "0", "1", ..."""
    id2label = ckpt.setting("id2label") or {}
    if not isinstance(id2label, dict) or len(id2label) != n_classes:  # a new head for other labels
        return [str(i) for i in range(n_classes)]
    try:
        names = [str(id2label[str(i)]) for i in range(n_classes)]
    except KeyError:
        return [str(i) for i in range(n_classes)]
    return names if len(set(names)) == n_classes else [str(i) for i in range(n_classes)]
