"""Readers for labelled text: CSV/TSV (with or without a header), JSONL, `text<TAB>label` files
with a class-name file (the THUCNews form) and AG News CSV. Each returns a `LabeledTexts`.

Files may be gzip-compressed (`.gz`). Problems are reported as `DataError` with the file, line and
what was wrong; blank lines are skipped and counted.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from attnkit.errors import DataError


@dataclass
class LabeledTexts:
    """Texts with their labels (class names as strings), and notes on what was skipped."""

    texts: list[str]
    labels: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def read_lines(path: Path | str, encoding: str = "utf-8") -> list[str]:
    """All lines of a text file, without line ends; a DataError names the line that fails to decode or
    holds a NUL byte."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: cannot be read ({error})") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(f"{path}: line {line} is not valid {encoding} ({error.reason})") from None
    if "\x00" in text:  # valid UTF-8, but no text file holds it: a binary file, or one in UTF-16
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{path}: line {line} holds a NUL byte; this looks like a binary or UTF-16 file, not text")
    lines = text.split("\n")  # not splitlines(): it also splits at \x1c, \x85, \u2028 and kin inside fields
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _format_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for suffix, kind in ((".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"), (".json", "jsonl")):
        if name.endswith(suffix):
            return kind
    return "tsv"


def read_labeled(
    path: Path | str,
    *,
    text_columns: list[str] | None = None,
    label_column: str | None = None,
    header: bool | None = None,
    class_names: list[str] | None = None,
) -> LabeledTexts:
    """Read a labelled text file, choosing the reader by extension (.csv, .tsv/.txt, .jsonl).

    Args:
        text_columns: columns joined (with ". ") into the text; names with a header, else
            0-based indices as strings. Default: "text" with a header, else every column but the label.
        label_column: the label's column (default "label" with a header, else the last column).
        header: whether the first row names the columns (None = guess: it contains `label_column`
            or "label"/"text").
        class_names: map integer labels i to class_names[i] (the THUCNews/AG News form).
    """
    path = Path(path)
    kind = _format_of(path)
    lines = read_lines(path)
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: the file is empty")
    if kind == "jsonl":
        result = _read_jsonl(path, lines, text_columns or ["text"], label_column or "label")
    else:
        result = _read_delimited(path, lines, "," if kind == "csv" else "\t", text_columns, label_column, header)
    if class_names is not None:
        result.labels = [_class_name(path, label, class_names) for label in result.labels]
    return result


FIELD_LIMIT = 64 * 1024 * 1024  # characters in one CSV/TSV field


def _read_delimited(
    path: Path,
    lines: list[str],
    delimiter: str,
    text_columns: list[str] | None,
    label_column: str | None,
    header: bool | None,
) -> LabeledTexts:
    rows = []
    # A long text (an article in one field) may exceed csv's default 128 KB field limit.
    limit = csv.field_size_limit(FIELD_LIMIT)
    try:
        for row in csv.reader(lines, delimiter=delimiter):
            rows.append(row)
    except csv.Error as error:
        raise DataError(f"{path}: line {len(rows) + 1} cannot be read as {_format_of(path)} ({error})") from None
    finally:
        csv.field_size_limit(limit)
    numbered = [(i + 1, row) for i, row in enumerate(rows) if any(cell.strip() for cell in row)]
    blank = len(rows) - len(numbered)
    if not numbered:
        raise DataError(f"{path}: the file holds no rows")
    first = [cell.strip() for cell in numbered[0][1]]
    if header is None:
        wanted = {label_column or "label", *(text_columns or ["text"])}
        header = bool(wanted & set(first))
        if not header and label_column is None and text_columns is None and _looks_like_header(numbered):
            raise DataError(
                f"{path}: line 1 looks like a header ({', '.join(first)}) but names no 'text' and 'label' columns;"
                " name the columns with --text-columns and --label-column, or give them by number"
                f" (e.g. --label-column {len(first) - 1}) if line 1 is data"
            )
    if header:
        names = first
        numbered = numbered[1:]
        label_name = label_column or "label"
        text_names = text_columns or ["text"]
        for name in [label_name, *text_names]:
            if name not in names:
                raise DataError(f"{path}: no column named {name!r} (columns: {', '.join(names)})")
        label_index = names.index(label_name)
        text_indices = [names.index(name) for name in text_names]
    else:
        width = len(first)
        label_index = _column_index(path, label_column, width, default=width - 1)
        if text_columns:
            text_indices = [_column_index(path, c, width, default=0) for c in text_columns]
        else:
            text_indices = [i for i in range(width) if i != label_index]
    texts, labels = [], []
    needed = max([label_index, *text_indices])
    width = len(numbered[0][1]) if not header else len(names)
    for line_no, row in numbered:
        if len(row) <= needed:
            raise DataError(f"{path}: line {line_no} has {len(row)} fields, expected at least {needed + 1}")
        if len(row) != width:  # a stray delimiter or broken quoting shifts the columns
            raise DataError(f"{path}: line {line_no} has {len(row)} fields, the first line has {width}")
        texts.append(". ".join(row[i].strip() for i in text_indices if row[i].strip()))
        labels.append(row[label_index].strip())
    return _finish(path, texts, labels, blank)


def _looks_like_header(numbered: list[tuple[int, list[str]]]) -> bool:
    """Whether a first row that names none of the default columns is still a header: every cell a short
    name of at most three words, and its last cell (the default label column) a value no other row has,
    while the other rows' labels repeat (so a file of unique labels is not mistaken for one)."""
    first = [cell.strip() for cell in numbered[0][1]]
    if len(numbered) < 3 or any(not cell or len(cell) > 40 or len(cell.split()) > 3 for cell in first):
        return False
    labels = [row[-1].strip() for _, row in numbered[1:] if row]
    return first[-1] not in labels and len(set(labels)) < len(labels)


def _column_index(path: Path, column: str | None, width: int, default: int) -> int:
    if column is None:
        return default
    if not column.lstrip("-").isdigit():
        raise DataError(f"{path}: has no header row, so columns are numbers 0..{width - 1}, not {column!r}")
    index = int(column)
    if not -width <= index < width:
        raise DataError(f"{path}: column {index} is out of range (rows have {width} fields)")
    return index % width


def _read_jsonl(path: Path, lines: list[str], text_keys: list[str], label_key: str) -> LabeledTexts:
    texts, labels, blank = [], [], 0
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            blank += 1
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: line {line_no} is not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {line_no} is not a JSON object")
        for key in [label_key, *text_keys]:
            if key not in record:
                raise DataError(f"{path}: line {line_no} has no field {key!r} (fields: {', '.join(record)})")
        texts.append(". ".join(str(record[k]).strip() for k in text_keys if str(record[k]).strip()))
        labels.append(str(record[label_key]).strip())
    return _finish(path, texts, labels, blank)


def _finish(path: Path, texts: list[str], labels: list[str], blank: int) -> LabeledTexts:
    if not texts:
        raise DataError(f"{path}: no examples found")
    for i, label in enumerate(labels):
        if not label:
            raise DataError(f"{path}: example {i + 1} has an empty label")
    notes = [f"skipped {blank} blank line(s)"] if blank else []
    empty = sum(1 for t in texts if not t.strip())
    if empty:
        notes.append(f"{empty} example(s) have an empty text")
    return LabeledTexts(texts, labels, source=str(path), notes=notes)


def _class_name(path: Path, label: str, class_names: list[str]) -> str:
    try:
        index = int(label)
    except ValueError:
        raise DataError(f"{path}: label {label!r} is not an integer index into the class-name file") from None
    if not 0 <= index < len(class_names):
        raise DataError(f"{path}: label {index} is outside the {len(class_names)} class names")
    return class_names[index]


def read_class_names(path: Path | str) -> list[str]:
    """One class name per line (line i = label i); blank lines are not allowed in between."""
    names = [line.strip() for line in read_lines(path)]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DataError(f"{path}: the class-name file is empty")
    if any(not name for name in names):
        raise DataError(f"{path}: blank class name on line {names.index('') + 1}")
    return names


def read_ag_news(path: Path | str, classes_path: Path | str) -> LabeledTexts:
    """AG News CSV (no header: class index 1-4, title, description) with classes.txt."""
    names = read_class_names(classes_path)
    data = read_labeled(path, text_columns=["1", "2"], label_column="0", header=False)
    data.labels = [_class_name(Path(path), str(int(label) - 1), names) for label in data.labels]
    return data


def read_thucnews(path: Path | str, classes_path: Path | str) -> LabeledTexts:
    """`headline<TAB>label` lines with a class-name file (THUCNews titles)."""
    names = read_class_names(classes_path)
    return read_labeled(path, text_columns=["0"], label_column="1", header=False, class_names=names)
