"""A trained classification run: predict classes of texts, evaluate on a labelled file."""

from __future__ import annotations

import argparse
import sys
from typing import Any, ClassVar

import torch
from torch import Tensor

from attnkit.data.batching import length_bucketed_plan, pad
from attnkit.data.tokenizer import PAD_ID, doubts, encode_texts, load_tokenizer
from attnkit.engine.evaluation import collect
from attnkit.errors import UserError
from attnkit.models import TextClassifier, TextEncoderConfig
from attnkit.tasks.base import Command, Run, metrics_command, random_ids
from attnkit.tasks.classify.data import check_labels, read_file, read_splits
from attnkit.tasks.classify.objective import prediction_rows
from attnkit.tasks.classify.options import ClassifyOptions
from attnkit.tasks.classify.report import report
from attnkit.tasks.io import add_top_k_argument, checked_top_k, output_format, read_inputs, top_labels, write_records


class ClassifierRun(Run, task="classify", options=ClassifyOptions, model=TextClassifier, config=TextEncoderConfig):
    """A trained `TextClassifier` with its tokenizer and classes."""

    extra_keys = ("classes",)

    options: ClassifyOptions

    @classmethod
    def new_model(cls, model_config: TextEncoderConfig, config: dict[str, Any]) -> TextClassifier:
        pooling = config["options"].get("pooling", "mean")
        return TextClassifier(model_config, len(config["classes"]), pooling=pooling)

    def setup(self) -> None:
        self.classes: list[str] = self.config["classes"]
        self.tokenizer = load_tokenizer(self.run_dir / "tokenizer.json")
        self.truncated = 0

    def encode(self, inputs: list[str]) -> dict[str, Tensor]:
        """Texts -> {"ids": (B, L)}, cut to the run's max_len, padded."""
        encoded = encode_texts(self.tokenizer, inputs, self.options.max_len)
        self.truncated = encoded.truncated
        return {"ids": pad(encoded.ids, PAD_ID).to(self.device)}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Class logits (B, C)."""
        with torch.no_grad():
            return self.model(batch["ids"])

    def probabilities(self, texts: list[str], batch_size: int = 64) -> Tensor:
        """(N, C) class probabilities, in the order of `texts`: a softmax, or one sigmoid per class
        when the run is multi-label."""
        encoded = encode_texts(self.tokenizer, texts, self.options.max_len)
        self.truncated = encoded.truncated
        threshold = self.options.threshold if self.options.multi_label else None
        rows = collect(
            # through `forward`, which `attnkit serve --backend onnx` replaces by onnxruntime's graph
            lambda batch: prediction_rows(lambda ids: self.forward({"ids": ids}), batch["ids"], threshold),
            # Batches of similar length, answered in the texts' order: texts in input order pad every
            # batch to its longest (R8's test set: 2.1 times the tokens of sorted batches).
            length_bucketed_plan([len(ids) for ids in encoded.ids], batch_size, shuffle=False)(0),
            lambda indices: {"ids": pad([encoded.ids[i] for i in indices], PAD_ID)},
            self.device,
            in_order=True,
        )
        return rows["probs"] if texts else torch.empty(0, len(self.classes))

    def evaluate(self, data: str | None = None, log: Any = print) -> dict[str, float]:
        """Accuracy and macro-F1 (multi-label: micro/macro-F1) on the labelled file `data`, by default
        on the run's own test split (its --dataset's, or its --test file)."""
        options = self.options
        if data:
            labelled = read_file(options, data)
        elif (options.dataset or options.test) and "source" not in self.config:
            labelled = read_splits(options, log=log)[2]
        else:
            raise UserError("evaluating a classify run needs --data FILE (labelled texts): it has no test split")
        check_labels(self.classes, labelled, "evaluation", options)
        probs = self.probabilities(labelled.texts)
        index = {c: i for i, c in enumerate(self.classes)}
        if options.multi_label:
            label = torch.zeros_like(probs, dtype=torch.bool)  # (N, C)
            for row, text_label in enumerate(labelled.labels):
                label[row, [index[c] for c in options.label_set(text_label)]] = True
            rows = {"pred": probs >= options.threshold, "label": label}
        else:
            rows = {"pred": probs.argmax(dim=-1), "label": torch.tensor([index[x] for x in labelled.labels])}
        if self.truncated:
            log(f"warning: {self.truncated} of {len(labelled)} texts were truncated to max_len={options.max_len}")
        return report(self.run_dir, rows, self.classes, "evaluation", log)

    def export_spec(self) -> dict[str, Any]:
        return {
            "length": self.model.body.config.max_len,
            "axes": {"ids": "length"},
            "output": "logits",
            "meaning": "class logits (batch, classes); multi-label runs: one sigmoid per class",
        }

    def example_batch(self, batch_size: int, length: int) -> dict[str, Tensor]:
        config = self.model.body.config
        return {"ids": random_ids(batch_size, length, 5, config.vocab_size, config.pad_id)}

    record_options: ClassVar[dict[str, type]] = {"top_k": int}

    def records(self, inputs: list[str], top_k: int | None = None) -> list[dict[str, Any]]:
        """Per text: {"text", "label", "probability", "top_k": [{"label", "probability"}]} (multi-label
        without top_k: {"text", "labels", "probabilities"}), and "warning" where the text deserves doubt."""
        if top_k is not None and top_k < 1:
            raise UserError("top_k must be at least 1")
        multi = self.options.multi_label and top_k is None
        found = _records(".jsonl", inputs, self.predict(inputs, top_k), multi, self.options.label_separator)
        warnings = doubts(self.tokenizer, inputs, self.options.max_len)
        return [{**r, "warning": w} if w else r for r, w in zip(found, warnings, strict=True)]

    def predict(self, inputs: list[str], top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """(class, probability) pairs per text, most probable first: the `top_k` best (default 1); for
        a multi-label run without `top_k`, every class whose probability reaches the threshold
        (possibly none)."""
        probs = self.probabilities(inputs)
        if top_k is None and self.options.multi_label:
            chosen = [(row >= self.options.threshold).nonzero().flatten().tolist() for row in probs]
            return [
                sorted(((self.classes[c], float(row[c])) for c in cs), key=lambda pair: -pair[1])
                for row, cs in zip(probs, chosen, strict=True)
            ]
        return top_labels(probs, self.classes, top_k or 1)


# ---------------------------------------------------------------------------------------- commands


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="labelled file in the training data's format (default: the run's test split)")


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--input", help="file of texts: one per line (.txt) or JSON lines with a 'text' field")
    parser.add_argument("--output", help="write predictions here (.csv or .jsonl) instead of printing")
    add_top_k_argument(parser, "classes", 1)


def _predict(run: ClassifierRun, args: argparse.Namespace) -> int:
    top_k = checked_top_k(args)
    if args.output:
        output_format(args.output)
    texts = read_inputs(args.texts, args.input, what="texts to classify")
    predictions = run.predict(texts, top_k)
    warnings = doubts(run.tokenizer, texts, run.options.max_len)
    for number, (text, warning) in enumerate(zip(texts, warnings, strict=True), start=1):
        if warning:
            shown = text if len(text) <= 40 else text[:37] + "..."
            print(f"warning: text {number} ({shown!r}): {warning}", file=sys.stderr)
    if args.output:
        multi = run.options.multi_label and top_k is None
        records = _records(args.output, texts, predictions, multi, run.options.label_separator)
        if args.output.endswith(".jsonl"):  # JSON lines carry each text's warning; CSV keeps its columns
            records = [{**r, "warning": w} if w else r for r, w in zip(records, warnings, strict=True)]
        write_records(args.output, records)
        print(f"wrote {len(texts)} predictions to {args.output}")
        return 0
    for text, ranked in zip(texts, predictions, strict=True):
        print(text if len(text) <= 70 else text[:67] + "...")
        for label, probability in ranked:
            print(f"  {label}\t{probability:.3f}")
        if not ranked:
            print(f"  (no class reaches the threshold {run.options.threshold:g}; --top-k 3 shows the likeliest)")
    return 0


def _records(
    path: str, texts: list[str], predictions: list[list[tuple[str, float]]], multi_label: bool, separator: str
) -> list[dict[str, Any]]:
    """One record per text for `write_records`: JSON lines keep numbers and the top-k list; CSV rows
    hold the label(s) and probability(ies), a multi-label row's joined by the run's separator."""
    records = []
    for text, ranked in zip(texts, predictions, strict=True):
        labels, probs = [label for label, _ in ranked], [p for _, p in ranked]
        if path.endswith(".jsonl"):
            if multi_label:
                record = {"text": text, "labels": labels, "probabilities": probs}
            else:
                top = [{"label": label, "probability": p} for label, p in ranked]
                record = {"text": text, "label": labels[0], "probability": probs[0], "top_k": top}
        elif multi_label:
            record = {
                "text": text,
                "labels": separator.join(labels),
                "probabilities": separator.join(f"{p:.6f}" for p in probs),
            }
        else:
            record = {"text": text, "label": labels[0], "probability": f"{probs[0]:.6f}"}
        records.append(record)
    return records


EVALUATE = metrics_command(
    "classify: on a labelled --data file.", _evaluate_arguments, lambda run, args: run.evaluate(args.data)
)
PREDICT = Command(_predict_arguments, _predict, "classify: the class of texts given on the command line or in a file.")
