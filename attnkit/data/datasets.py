"""Standard datasets by name: where they live and how to read their splits.

The data directory is `--data-dir`, else `$ATTNKIT_DATA/<folder>`, else
`~/.cache/attnkit/data/<folder>` (where `attnkit data download` puts them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from attnkit.data.readers import LabeledTexts, read_ag_news, read_thucnews
from attnkit.data.reuters import read_reuters, reuters_subset, reuters_topics, reuters_unlabeled
from attnkit.errors import DataError

FOLDERS = {
    "reuters_r8": "reuters21578",
    "reuters_r52": "reuters21578",
    "reuters_90": "reuters21578",
    "ag_news": "ag_news",
    "thucnews_title": "thucnews_title",
    "multi30k": "multi30k",
}
MULTI_LABEL = {"reuters_90"}  # datasets whose examples carry sets of labels, joined by "|"


@dataclass
class Splits:
    """A dataset's train, optional validation and test splits, and its unlabelled text if any."""

    train: LabeledTexts
    valid: LabeledTexts | None
    test: LabeledTexts | None
    unlabeled: list[str] | None = None


def data_root() -> Path:
    """Where standard datasets are looked for and downloaded to."""
    env = os.environ.get("ATTNKIT_DATA")
    return Path(env) if env else Path.home() / ".cache" / "attnkit" / "data"


def dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    if name not in FOLDERS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(FOLDERS))}")
    return Path(data_dir) if data_dir else data_root() / FOLDERS[name]


def _first(directory: Path, *names: str) -> Path | None:
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def ensure_dataset(name: str, data_dir: str | Path | None = None, log=print) -> Path:
    """The dataset's folder, fetched there first (`attnkit data download`) when it is absent, saying so."""
    directory = dataset_dir(name, data_dir)
    if not directory.is_dir():
        from attnkit.data.download import download

        log(f"{directory}: dataset {name} not found there; downloading it")
        download(FOLDERS[name], directory, log=log)
    return directory


def load_classification(name: str, data_dir: str | Path | None = None) -> Splits:
    """Read a standard classification dataset's splits."""
    directory = dataset_dir(name, data_dir)
    if not directory.is_dir():
        raise DataError(
            f"{directory}: dataset {name} not found; set ATTNKIT_DATA or --data-dir, "
            f"or run `attnkit data download {FOLDERS[name]}`"
        )
    if name == "reuters_90":
        docs = read_reuters(directory)
        return Splits(
            reuters_topics(docs, "train"), None, reuters_topics(docs, "test"), unlabeled=reuters_unlabeled(docs)
        )
    if name.startswith("reuters_"):
        docs = read_reuters(directory)
        subset = name.removeprefix("reuters_")
        return Splits(
            reuters_subset(docs, subset, "train"),
            None,
            reuters_subset(docs, subset, "test"),
            unlabeled=reuters_unlabeled(docs),
        )
    if name == "ag_news":
        classes = directory / "classes.txt"
        train, test = _first(directory, "train.csv"), _first(directory, "test.csv")
        if train is None:
            raise DataError(
                f"{directory}: AG News train.csv is missing (only {test.name if test else 'nothing'} "
                "is there); run `attnkit data download ag_news`"
            )
        return Splits(read_ag_news(train, classes), None, read_ag_news(test, classes) if test else None)
    classes = directory / "class.txt"
    train = _first(directory, "train.txt")
    if train is None:
        raise DataError(
            f"{directory}: THUCNews train.txt is missing; train on another split with "
            f"--train {directory}/dev.txt.gz --class-names {classes}"
        )
    dev, test = _first(directory, "dev.txt"), _first(directory, "test.txt")
    return Splits(
        read_thucnews(train, classes),
        read_thucnews(dev, classes) if dev else None,
        read_thucnews(test, classes) if test else None,
    )


MULTI30K_LANGS = ("de", "en")


def multi30k_files(
    src_lang: str, tgt_lang: str, data_dir: str | Path | None = None, test_set: str = "test_2016_flickr"
) -> dict[str, Path]:
    """Paths of Multi30k (task 1) for one direction, as the multi30k/dataset repository lays them out.

    Keys: train_src, train_tgt, valid_src, valid_tgt, test_src, test_tgt (cased, untokenized `raw/`)
    and test_ref_tok (the lowercased, Moses-tokenized `tok/` reference that papers score against).
    """
    if {src_lang, tgt_lang} != set(MULTI30K_LANGS):
        raise DataError(f"multi30k here has de and en; got --src-lang {src_lang} --tgt-lang {tgt_lang}")
    directory = dataset_dir("multi30k", data_dir)
    files = {
        "train_src": directory / "raw" / f"train.{src_lang}.gz",
        "train_tgt": directory / "raw" / f"train.{tgt_lang}.gz",
        "valid_src": directory / "raw" / f"val.{src_lang}.gz",
        "valid_tgt": directory / "raw" / f"val.{tgt_lang}.gz",
        "test_src": directory / "raw" / f"{test_set}.{src_lang}.gz",
        "test_tgt": directory / "raw" / f"{test_set}.{tgt_lang}.gz",
        "test_ref_tok": directory / "tok" / f"{test_set}.lc.norm.tok.{tgt_lang}.gz",
    }
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise DataError(
            f"multi30k: {missing[0]} is missing ({len(missing)} file(s)); put the multi30k/dataset repository's "
            f"data/task1/raw and tok folders (gzipped) in {directory}, or give --data-dir"
        )
    return files
