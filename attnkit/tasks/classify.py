"""News (text) classification: a Transformer encoder trained on labelled texts, on the one engine.

Train: read the splits (files or a standard dataset), hold out a stratified validation slice when
none is given, train a tokenizer on the training texts only, train a `TextClassifier` with the
engine, then evaluate the best checkpoint on the test split (else validation) and write
metrics.json and confusion.png. Evaluate and predict work from the run directory alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.batching import length_bucketed_plan, pad
from attnkit.data.datasets import MULTI_LABEL, ensure_dataset, load_classification
from attnkit.data.readers import LabeledTexts, read_class_names, read_labeled
from attnkit.data.tokenizer import PAD_ID, encode_texts, load_tokenizer, train_tokenizer
from attnkit.engine import Batches, Dist, TrainConfig, Trainer, load_weights
from attnkit.engine.checkpoint import shape_mismatch
from attnkit.engine.distributed import barrier
from attnkit.errors import DataError, UserError
from attnkit.metrics import classification_report, multilabel_report
from attnkit.models import TextClassifier, TextEncoderConfig
from attnkit.tasks.encoder_options import EncoderOptions
from attnkit.tasks.runs import open_run, start_run, write_metrics, write_new_run


@dataclass(frozen=True, kw_only=True)
class ClassifyOptions(EncoderOptions):
    """Everything `attnkit train classify` takes besides the engine's TrainConfig."""

    out: str = field(default="runs/classify", metadata={"help": "run directory to write"})
    train: str | None = field(default=None, metadata={"help": "training file (.csv/.tsv/.txt/.jsonl[.gz])"})
    valid: str | None = field(
        default=None, metadata={"help": "validation file (default: a stratified slice of --train)"}
    )
    test: str | None = field(default=None, metadata={"help": "test file"})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "standard dataset instead of files: reuters_r8, reuters_r52, reuters_90 (multi-label), "
            "ag_news, thucnews_title"
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "the dataset's folder (default $ATTNKIT_DATA/<folder>)"}
    )
    text_columns: str | None = field(
        default=None,
        metadata={"help": "comma-separated text columns, joined (names with a header, else 0-based indices)"},
    )
    label_column: str | None = field(
        default=None, metadata={"help": "label column (default: 'label' or the last column)"}
    )
    class_names: str | None = field(default=None, metadata={"help": "file of class names, line i = label i"})
    valid_fraction: float = field(
        default=0.1,
        metadata={
            "help": "share of --train held out for validation; 0 = none: train on all of it and keep the last "
            "weights (the average of the last --average-last epochs)"
        },
    )
    tokenizer_file: str | None = field(
        default=None,
        metadata={
            "help": "use this tokenizer.json instead of training one (training breaks frequency ties "
            "differently from one process to the next, so a shared file makes runs repeatable)"
        },
    )
    pooling: str = field(default="mean", metadata={"help": "mean (masked) or cls"})
    init: str | None = field(
        default=None,
        metadata={"help": "start from the encoder of this run (e.g. an `attnkit train mlm` run)"},
    )
    multi_label: bool = field(
        default=False,
        metadata={
            "help": "each text has a set of labels, joined by --label-separator in the label column: one "
            "sigmoid per class, micro/macro-F1 (on by itself for reuters_90)"
        },
    )
    label_separator: str = field(default="|", metadata={"help": "separates the labels of a multi-label example"})
    average_last: int = field(
        default=1,
        metadata={
            "help": "average the weights of the last k evaluations and keep the average if it scores at least "
            "as well on validation as the best checkpoint (1 = off)"
        },
    )
    threshold: float = field(
        default=0.5, metadata={"help": "multi-label: a class is predicted when its probability reaches this"}
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "single-label: spread this much of each target's probability over all classes"}
    )
    token_dropout: float = field(
        default=0.0,
        metadata={"help": "in training, remove each token (but the first) of a text with this probability"},
    )

    def __post_init__(self) -> None:
        if not (self.train or self.dataset):
            raise UserError("give --train FILE or --dataset NAME")
        if self.train and self.dataset:
            raise UserError("give either --train or --dataset, not both")
        if not 0 <= self.valid_fraction < 1:
            raise UserError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}")
        if self.max_len < 2:
            raise UserError(f"--max-len must be at least 2, got {self.max_len}")
        if self.pooling not in ("mean", "cls"):
            raise UserError(f"--pooling must be mean or cls, got {self.pooling!r}")
        if not 0 < self.threshold < 1:
            raise UserError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.token_dropout < 1:
            raise UserError(f"--token-dropout must be in [0, 1), got {self.token_dropout}")
        if self.average_last < 1:
            raise UserError(f"--average-last must be at least 1, got {self.average_last}")
        if not self.label_separator:
            raise UserError("--label-separator must not be empty")
        if self.dataset in MULTI_LABEL:
            object.__setattr__(self, "multi_label", True)

    def label_set(self, label: str) -> list[str]:
        """The classes of one example: its label, or with --multi-label the separated labels."""
        if not self.multi_label:
            return [label]
        return sorted({part.strip() for part in label.split(self.label_separator) if part.strip()})


TRAIN_DEFAULTS = {"metric": "accuracy", "metric_mode": "max", "lr": 5e-4, "epochs": 10, "batch_size": 32}


class ClassifyTask:
    """Cross-entropy of class logits, accuracy and macro-F1, for the engine.

    The model reads `batch[input_key]`; `VisionTask` reads images instead of token ids.

    Args:
        label_smoothing: spread this much of each target's probability over all classes.
    """

    input_key = "ids"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def count(self, batch: dict[str, Tensor]) -> int:
        """What the engine's throughput counts: real (non-padding) tokens."""
        return int((batch["ids"] != PAD_ID).sum())

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        logits = model(batch[self.input_key]).float()  # (B, C)
        return F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing), self.count(batch)

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = model(batch[self.input_key]).float()  # (B, C)
        return {
            "pred": logits.argmax(dim=-1),
            "label": batch["label"],
            "loss": F.cross_entropy(logits, batch["label"], reduction="none"),
        }

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        n_classes = int(max(rows["pred"].max(), rows["label"].max())) + 1
        report = classification_report(rows["pred"], rows["label"], n_classes)
        return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "loss": float(rows["loss"].mean())}


class MultiLabelTask(ClassifyTask):
    """Loss and metrics of multi-label classification: one independent sigmoid per class.

    Args:
        threshold: a class is predicted when its probability reaches it.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        logits = model(batch[self.input_key]).float()  # (B, C)
        return F.binary_cross_entropy_with_logits(logits, batch["label"]), self.count(batch)

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = model(batch[self.input_key]).float()  # (B, C)
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"], reduction="none").mean(dim=-1)  # (B,)
        return {"pred": logits.sigmoid() >= self.threshold, "label": batch["label"] > 0.5, "loss": loss}

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        report = multilabel_report(rows["pred"], rows["label"])
        return {
            "accuracy": report["accuracy"],
            "micro_f1": report["micro_f1"],
            "macro_f1": report["macro_f1"],
            "loss": float(rows["loss"].mean()),
        }


@dataclass
class Prepared:
    """Texts turned into ids and labels, with the batches the engine iterates.

    `labels` holds one class index per example, or with `n_classes` set (multi-label) a list of them.
    """

    ids: list[list[int]]
    labels: list[int] | list[list[int]]
    truncated: int
    n_classes: int | None = None

    def batches(self, batch_size: int, *, shuffle: bool, seed: int) -> Batches:
        plan = length_bucketed_plan([len(x) for x in self.ids], batch_size, shuffle=shuffle, seed=seed)

        def collate(indices: list[int]) -> dict[str, Tensor]:
            if self.n_classes is None:
                label = torch.tensor([self.labels[i] for i in indices], dtype=torch.long)  # (B,)
            else:
                label = torch.zeros(len(indices), self.n_classes)  # (B, C) multi-hot
                for row, i in enumerate(indices):
                    label[row, self.labels[i]] = 1.0
            return {"ids": pad([self.ids[i] for i in indices], PAD_ID), "label": label}

        return Batches(plan, collate)


# ---------------------------------------------------------------------------------------- data


def read_splits(
    options: ClassifyOptions, where: Dist | None = None, log: Any = print
) -> tuple[LabeledTexts, LabeledTexts | None, LabeledTexts | None]:
    """The train, validation and test texts the options name.

    A missing standard dataset is downloaded first, by rank 0 alone while the other processes wait.
    """
    if options.dataset:
        where = where or Dist()
        if where.is_main:
            ensure_dataset(options.dataset, options.data_dir, log)
        barrier(where)
        splits = load_classification(options.dataset, options.data_dir)
        return splits.train, splits.valid, splits.test
    names = read_class_names(options.class_names) if options.class_names else None
    columns = options.text_columns.split(",") if options.text_columns else None

    def read(path: str | None) -> LabeledTexts | None:
        if path is None:
            return None
        return read_labeled(path, text_columns=columns, label_column=options.label_column, class_names=names)

    return read(options.train), read(options.valid), read(options.test)


def stratified_split(data: LabeledTexts, fraction: float, seed: int) -> tuple[LabeledTexts, LabeledTexts]:
    """Hold out `fraction` of each class (at least one example of classes with two or more)."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(data.labels):
        by_class.setdefault(label, []).append(index)
    held: list[int] = []
    for indices in by_class.values():
        if len(indices) < 2:
            continue
        count = max(1, round(len(indices) * fraction))
        held += rng.choice(indices, size=count, replace=False).tolist()
    held_set = set(held)
    keep = [i for i in range(len(data)) if i not in held_set]
    held.sort()

    def take(indices: list[int]) -> LabeledTexts:
        return LabeledTexts([data.texts[i] for i in indices], [data.labels[i] for i in indices], data.source)

    return take(keep), take(held)


def check_labels(classes: list[str], split: LabeledTexts, name: str, options: ClassifyOptions) -> None:
    unknown = sorted({c for label in split.labels for c in options.label_set(label)} - set(classes))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        raise DataError(
            f"{split.source or name}: label(s) {shown} appear in the {name} data but not in the training data"
        )


def prepare(tokenizer: Any, data: LabeledTexts, classes: list[str], options: ClassifyOptions) -> Prepared:
    index = {name: i for i, name in enumerate(classes)}
    encoded = encode_texts(tokenizer, data.texts, options.max_len)
    if options.multi_label:
        sets = [[index[c] for c in options.label_set(label)] for label in data.labels]
        return Prepared(encoded.ids, sets, encoded.truncated, n_classes=len(classes))
    return Prepared(encoded.ids, [index[label] for label in data.labels], encoded.truncated)


def class_names(data: LabeledTexts, options: ClassifyOptions) -> list[str]:
    """The classes of the training data, sorted."""
    sets = [options.label_set(label) for label in data.labels]
    empty = next((i for i, classes in enumerate(sets) if not classes), None)
    if empty is not None:  # only a multi-label "|" can split into nothing: readers refuse empty labels
        raise DataError(f"{data.source}: example {empty + 1} has no label between the separators")
    return sorted({c for classes in sets for c in classes})


# ---------------------------------------------------------------------------------------- commands


def train(
    options: ClassifyOptions | None,
    train_config: TrainConfig,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    log: Any = print,
    model_factory: Any = None,
) -> dict[str, float]:
    """`attnkit train classify`: train, select by validation accuracy, report test metrics.

    `model_factory(encoder_config, n_classes, pooling=...)` builds another model with the same
    interface (ids -> logits) in place of `TextClassifier`; benchmarks use it to train a baseline
    on exactly the same tokens, batches and steps.
    """
    where, run_dir, options, train_config, saved, log = start_run(
        options, ClassifyOptions, train_config, resume=resume, run_dir=run_dir, log=log
    )
    train_data, valid_data, test_data = read_splits(options, where, log)
    for note in train_data.notes:
        log(f"note: {train_data.source}: {note}")
    if valid_data is None and options.valid_fraction > 0:
        train_data, valid_data = stratified_split(train_data, options.valid_fraction, train_config.seed)
        log(f"validation: held out {len(valid_data)} of the training examples (stratified)")
    elif valid_data is None:
        kept = f"the average of the last {options.average_last} epochs" if options.average_last > 1 else "the last"
        log(f"validation: none (--valid-fraction 0): trained on all the training examples, {kept} weights kept")
    classes = class_names(train_data, options)
    if len(classes) < 2:
        raise DataError(f"{train_data.source}: the training data has only one class ({classes[0]!r})")
    for split, name in ((valid_data, "validation"), (test_data, "test")):
        if split is not None:
            check_labels(classes, split, name, options)

    encoder_config, tokenizer = _model_setup(options, train_data, run_dir, saved)
    torch.manual_seed(train_config.seed)
    model = (model_factory or TextClassifier)(
        encoder_config, len(classes), pooling=options.pooling, token_dropout=options.token_dropout
    )
    if options.init and not resume:  # before the run is written: weights that do not fit leave nothing behind
        _load_encoder(model, Path(options.init))
    if not resume:
        config = {
            "task": "classify",
            "options": dataclasses.asdict(options),
            "model": encoder_config.to_dict(),
            "classes": classes,
            "train": train_config.to_dict(),
        }
        write_new_run(run_dir, where, config, tokenizer=tokenizer)
    prepared = {
        name: prepare(tokenizer, data, classes, options)
        for name, data in (("train", train_data), ("valid", valid_data), ("test", test_data))
        if data is not None
    }
    truncated = sum(p.truncated for p in prepared.values())
    if truncated:
        total = sum(len(p.ids) for p in prepared.values())
        log(
            f"warning: {truncated} of {total} texts are longer than max_len={options.max_len} tokens and were truncated"
        )
    log(
        f"data: {len(train_data)} train / {len(valid_data) if valid_data else 0} validation / "
        f"{len(test_data) if test_data else 0} test examples, {len(classes)} classes"
    )
    train_config = train_config.averaging(options.average_last)
    log(f"model: {type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters")
    trainer = Trainer(
        model,
        MultiLabelTask(options.threshold) if options.multi_label else ClassifyTask(options.label_smoothing),
        train_config,
        run_dir,
        prepared["train"].batches(train_config.batch_size, shuffle=True, seed=train_config.seed),
        prepared["valid"].batches(train_config.batch_size, shuffle=False, seed=0) if valid_data else None,
        where,
        log=log,
    )
    trainer.fit(resume=resume)
    load_weights(model, run_dir / "model.safetensors")
    threshold = options.threshold if options.multi_label else None
    if options.average_last > 1:
        valid_batches = (
            prepared["valid"].batches(train_config.batch_size, shuffle=False, seed=0) if valid_data else None
        )
        _keep_average(trainer, valid_batches, threshold, options.average_last, train_config.metric)
    final_name = "test" if "test" in prepared else "valid"
    if final_name not in prepared:
        log("no test or validation data: nothing to evaluate")
        return {}
    final_batches = prepared[final_name].batches(train_config.batch_size, shuffle=False, seed=0)
    rows = _collect(trainer, final_batches, threshold)
    if not where.is_main:
        return {}
    metrics = _report(run_dir, rows, classes, final_name, log)
    final_data = test_data if final_name == "test" else valid_data
    _show_examples(final_data, rows, classes, log)
    return metrics


def _keep_average(trainer: Trainer, valid: Batches | None, threshold: float | None, last: int, metric: str) -> None:
    """Average the last `last` evaluation checkpoints into the model: always when there is no
    validation data, else only when the average scores at least as well on it (by `metric`, or
    accuracy when that is the loss) as the best checkpoint loaded in the model."""
    task = MultiLabelTask(threshold) if threshold is not None else ClassifyTask()

    def score() -> float:
        rows = _collect(trainer, valid, threshold)
        found = task.metrics({**rows, "loss": torch.zeros(1)})
        return found[metric] if metric in found and metric != "loss" else found["accuracy"]  # higher is better

    trainer.keep_average(last, score if valid is not None else None)


def _show_examples(
    data: LabeledTexts,
    rows: dict[str, Tensor],
    classes: list[str],
    log: Any,
    count: int = 3,
) -> None:
    """A few predictions on the evaluation split, in its own order, beside the true labels."""
    log("examples:")
    for i in range(min(count, len(data))):
        text = data.texts[i] if len(data.texts[i]) <= 90 else data.texts[i][:87] + "..."
        if rows["pred"].dim() == 2:  # multi-label
            chosen = rows["pred"][i].nonzero().flatten().tolist()
            predicted = "|".join(f"{classes[c]} ({float(rows['prob'][i, c]):.2f})" for c in chosen) or "nothing"
            truth = "|".join(classes[c] for c in rows["label"][i].nonzero().flatten().tolist())
            mark = "right" if torch.equal(rows["pred"][i], rows["label"][i]) else "wrong"
            log(f"  [{mark}] predicted {predicted}, true {truth}: {text}")
            continue
        predicted = classes[int(rows["pred"][i])]
        mark = "right" if predicted == data.labels[i] else "wrong"
        log(f"  [{mark}] predicted {predicted} ({float(rows['prob'][i]):.2f}), true {data.labels[i]}: {text}")


def _model_setup(
    options: ClassifyOptions, train_data: LabeledTexts, run_dir: Path, saved: dict[str, Any] | None
) -> tuple[TextEncoderConfig, Any]:
    """The encoder's configuration and tokenizer: the resumed run's (`saved`), an --init run's, or new."""
    if saved is not None:
        return TextEncoderConfig.from_dict(saved["model"]), load_tokenizer(run_dir / "tokenizer.json")
    if options.init:
        init_dir, init_config = open_run(options.init)
        if "model" not in init_config:
            raise UserError(f"{init_dir}: has no model configuration to start from")
        base = TextEncoderConfig.from_dict(init_config["model"])
        if options.max_len > base.max_len:
            raise UserError(f"--max-len {options.max_len} exceeds the initial model's max_len {base.max_len}")
        config = dataclasses.replace(base, dropout=options.dropout, attention_dropout=options.attention_dropout)
        return config, load_tokenizer(init_dir / "tokenizer.json")
    if options.tokenizer_file:
        tokenizer = load_tokenizer(options.tokenizer_file)
    else:
        tokenizer = train_tokenizer(
            train_data.texts, kind=options.tokenizer, vocab_size=options.vocab_size, lowercase=options.lowercase
        )
    return options.encoder_config(tokenizer.get_vocab_size()), tokenizer


def _load_encoder(model: TextClassifier, init_dir: Path) -> None:
    """Copy the encoder body (embeddings, positions, layers) from another run's weights."""
    from safetensors.torch import load_file

    path = init_dir / "model.safetensors"
    if not path.is_file():
        raise UserError(f"{init_dir}: no model.safetensors to start from")
    try:
        weights = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise UserError(f"{path}: cannot read weights ({error})") from None
    body = {k.removeprefix("body."): v for k, v in weights.items() if k.startswith("body.")}
    mismatch = shape_mismatch(model.body.state_dict(), {k: tuple(v.shape) for k, v in body.items()})
    if mismatch:  # the weights and the run's config.json disagree
        raise UserError(f"{path}: encoder weights do not fit ({mismatch})")
    missing, unexpected = model.body.load_state_dict(body, strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: encoder weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")


def _collect(trainer: Trainer, batches: Batches, threshold: float | None = None) -> dict[str, Tensor]:
    """Predictions for every example, in the dataset's order (batches are by length).

    Single-label: pred and label (N,), prob (N,) the predicted class's. Multi-label (a `threshold`):
    pred and label (N, C) bool, prob (N, C).
    """
    model = trainer.model
    model.eval()
    order: list[int] = []
    rows: dict[str, list[Tensor]] = {"pred": [], "label": [], "prob": []}
    with torch.no_grad():
        for indices in batches.plan(0):
            batch = {k: v.to(trainer.where.device) for k, v in batches.collate(indices).items()}
            logits = model(batch["ids"]).float()  # (B, C)
            if threshold is None:
                probs = logits.softmax(dim=-1)
                rows["prob"].append(probs.max(dim=-1).values.cpu())
                rows["pred"].append(probs.argmax(dim=-1).cpu())
                rows["label"].append(batch["label"].cpu())
            else:
                probs = logits.sigmoid()
                rows["prob"].append(probs.cpu())
                rows["pred"].append((probs >= threshold).cpu())
                rows["label"].append((batch["label"] > 0.5).cpu())
            order += indices
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {k: torch.cat(v)[inverse] for k, v in rows.items()}


def _report(run_dir: Path, rows: dict[str, Tensor], classes: list[str], split: str, log: Any) -> dict[str, float]:
    from attnkit.viz.confusion import plot_confusion

    if rows["pred"].dim() == 2:  # multi-label: no confusion matrix; F1 per class instead
        report = multilabel_report(rows["pred"], rows["label"])
        metrics = {k: report[k] for k in ("micro_f1", "macro_f1", "accuracy")}
        write_metrics(run_dir, metrics)
        log(
            f"{split}: micro-F1 {metrics['micro_f1']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
            f"exact-match accuracy {metrics['accuracy']:.4f}  ({len(rows['label'])} examples)"
        )
    else:
        report = classification_report(rows["pred"], rows["label"], len(classes))
        metrics = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
        write_metrics(run_dir, metrics)
        plot_confusion(run_dir / "confusion.png", report["confusion"], classes, title=f"{split}: confusion")
        log(
            f"{split}: accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
            f"({len(rows['label'])} examples)"
        )
    width = max(len(c) for c in classes)
    log(f"  {'class':<{width}}  precision  recall      F1  support")
    for i, name in enumerate(classes):
        log(
            f"  {name:<{width}}  {report['precision'][i]:9.3f}  {report['recall'][i]:6.3f}  {report['f1'][i]:6.3f}"
            f"  {report['support'][i]:7d}"
        )
    return metrics


class LoadedClassifier:
    """A trained classifier loaded from its run directory, for evaluate and predict."""

    def __init__(self, run_dir: str | Path, device: str = "cpu") -> None:
        self.run_dir, config = open_run(run_dir)
        if config["task"] != "classify":
            raise UserError(f"{self.run_dir}: is a {config['task']} run, not a classify run")
        self.options = ClassifyOptions(**config["options"])
        self.classes: list[str] = config["classes"]
        self.tokenizer = load_tokenizer(self.run_dir / "tokenizer.json")
        self.model = TextClassifier(
            TextEncoderConfig.from_dict(config["model"]), len(self.classes), pooling=self.options.pooling
        )
        load_weights(self.model, self.run_dir / "model.safetensors")
        self.device = torch.device(device)
        self.model.to(self.device).eval()

    def probabilities(self, texts: list[str], batch_size: int = 64) -> Tensor:
        """(N, C) class probabilities, in the order of `texts`: a softmax, or one sigmoid per class
        when the run is multi-label."""
        encoded = encode_texts(self.tokenizer, texts, self.options.max_len)
        out = torch.empty(len(texts), len(self.classes))
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                ids = pad(encoded.ids[start : start + batch_size], PAD_ID).to(self.device)
                logits = self.model(ids).float()  # (B, C)
                probs = logits.sigmoid() if self.options.multi_label else logits.softmax(dim=-1)
                out[start : start + batch_size] = probs.cpu()
        self.truncated = encoded.truncated
        return out

    def evaluate(self, path: str, log: Any = print) -> dict[str, float]:
        columns = self.options.text_columns.split(",") if self.options.text_columns else None
        names = read_class_names(self.options.class_names) if self.options.class_names else None
        data = read_labeled(path, text_columns=columns, label_column=self.options.label_column, class_names=names)
        check_labels(self.classes, data, "evaluation", self.options)
        probs = self.probabilities(data.texts)
        index = {c: i for i, c in enumerate(self.classes)}
        if self.options.multi_label:
            label = torch.zeros_like(probs, dtype=torch.bool)  # (N, C)
            for row, text_label in enumerate(data.labels):
                label[row, [index[c] for c in self.options.label_set(text_label)]] = True
            rows = {"pred": probs >= self.options.threshold, "label": label}
        else:
            rows = {"pred": probs.argmax(dim=-1), "label": torch.tensor([index[x] for x in data.labels])}
        if self.truncated:
            log(f"warning: {self.truncated} of {len(data)} texts were truncated to max_len={self.options.max_len}")
        return _report(self.run_dir, rows, self.classes, "evaluation", log)

    def predict(self, texts: list[str], top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """(class, probability) pairs per text, most probable first: the `top_k` best (default 1); for
        a multi-label run without `top_k`, every class whose probability reaches the threshold
        (possibly none)."""
        probs = self.probabilities(texts)
        if top_k is None and self.options.multi_label:
            chosen = [(row >= self.options.threshold).nonzero().flatten().tolist() for row in probs]
            return [
                sorted(((self.classes[c], float(row[c])) for c in cs), key=lambda pair: -pair[1])
                for row, cs in zip(probs, chosen, strict=True)
            ]
        k = max(1, min(top_k or 1, len(self.classes)))
        values, indices = probs.topk(k, dim=-1)
        return [
            [(self.classes[int(i)], float(v)) for v, i in zip(vs, ix, strict=True)]
            for vs, ix in zip(values, indices, strict=True)
        ]
