"""`attnkit train classify`: train, select by validation accuracy, report test metrics."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnkit.data.readers import LabeledTexts
from attnkit.data.tokenizer import load_tokenizer, train_tokenizer
from attnkit.engine import Batches, Trainer, load_weights
from attnkit.engine.checkpoint import shape_mismatch
from attnkit.engine.evaluation import collect
from attnkit.errors import DataError, UserError
from attnkit.models import TextClassifier, TextEncoderConfig
from attnkit.tasks.classify.data import check_labels, class_names, prepare, read_splits, stratified_split
from attnkit.tasks.classify.objective import ClassifyTask, MultiLabelTask, prediction_rows
from attnkit.tasks.classify.options import ClassifyOptions
from attnkit.tasks.classify.report import report
from attnkit.tasks.rundir import RunStart, read_config, run_config, write_new_run


def train_run(start: RunStart, model_factory: Any = None) -> dict[str, float]:
    """`attnkit train classify`: train, select by validation accuracy, report test metrics.

    `model_factory(encoder_config, n_classes, pooling=...)` builds another model with the same
    interface (ids -> logits) in place of `TextClassifier`; benchmarks use it to train a baseline
    on exactly the same tokens, batches and steps.
    """
    where, run_dir, options, train_config, saved, log, resume = start
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
        load_encoder(model, Path(options.init))
    if not resume:
        config = run_config("classify", options, encoder_config, train_config, classes=classes)
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
    metrics = report(run_dir, rows, classes, final_name, log)
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
        init_dir, init_config = read_config(options.init)
        if init_config["task"] not in ("mlm", "classify"):
            raise UserError(f"--init {init_dir}: is a {init_config['task']} run; start from an mlm or classify run")
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


def load_encoder(model: TextClassifier, init_dir: Path) -> None:
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
    pooler = {k.removeprefix("pooler."): v for k, v in weights.items() if k.startswith("pooler.")}
    if model.pooler is not None and pooler:  # BERT's pooler is pre-trained too; without one it starts anew
        model.pooler.load_state_dict(pooler)


def _collect(trainer: Trainer, batches: Batches, threshold: float | None = None) -> dict[str, Tensor]:
    """Predictions for every example, in the dataset's order (batches are by length); see `prediction_rows`."""
    model = trainer.model.eval()
    return collect(
        lambda batch: (
            prediction_rows(model, batch["ids"], threshold) | {"label": _label_rows(batch["label"], threshold)}
        ),
        batches.plan(0),
        batches.collate,
        trainer.where.device,
        in_order=True,
    )


def _label_rows(label: Tensor, threshold: float | None) -> Tensor:
    """Class indices (B,), or for a multi-label run (a `threshold`) the multi-hot rows as bool (B, C)."""
    return label if threshold is None else label > 0.5
