"""Classification data: the splits the options name, a stratified validation slice, ids and labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnkit.data.batching import length_bucketed_plan, pad
from attnkit.data.readers import LabeledTexts, read_class_names, read_labeled
from attnkit.data.tokenizer import PAD_ID, encode_texts
from attnkit.engine import Batches, Dist
from attnkit.errors import DataError
from attnkit.tasks.classify.options import ClassifyOptions
from attnkit.tasks.io import standard_dataset


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


def read_splits(
    options: ClassifyOptions, where: Dist | None = None, log: Any = print
) -> tuple[LabeledTexts, LabeledTexts | None, LabeledTexts | None]:
    """The train, validation and test texts the options name.

    A missing standard dataset is downloaded first, by rank 0 alone while the other processes wait.
    """
    if options.dataset:
        splits = standard_dataset(options.dataset, options.data_dir, where, log)
        return splits.train, splits.valid, splits.test
    return tuple(read_file(options, path) if path else None for path in (options.train, options.valid, options.test))


def read_file(options: ClassifyOptions, path: str) -> LabeledTexts:
    """A labelled file in the format the options describe (text and label columns, class names)."""
    names = read_class_names(options.class_names) if options.class_names else None
    columns = options.text_columns.split(",") if options.text_columns else None
    return read_labeled(path, text_columns=columns, label_column=options.label_column, class_names=names)


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
