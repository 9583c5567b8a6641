"""What the tasks share in reading and writing: standard datasets, the user's inputs, ranked classes,
predictions.

Inputs come from the command line, a file (one per line, or JSON lines with a "text" field), or
standard input. Predictions go to the screen or to a file whose suffix says its format: .csv or
.jsonl; where a task's output is one line of text per input (translations), any other suffix
is plain text, one line per input.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from torch import Tensor

from attnkit.atomic import atomic_path
from attnkit.data.datasets import ensure_dataset, load_classification
from attnkit.data.readers import read_lines
from attnkit.engine import Dist
from attnkit.engine.distributed import barrier
from attnkit.errors import UserError


def standard_dataset(name: str, data_dir: str | None, where: Dist | None = None, log: Any = print) -> Any:
    """A standard classification dataset's splits (`load_classification`); a missing one is downloaded
    first, by rank 0 alone while the other processes wait."""
    where = where or Dist()
    if where.is_main:
        ensure_dataset(name, data_dir, log)
    barrier(where)
    return load_classification(name, data_dir)


def read_inputs(texts: list[str], path: str | None, *, stdin: bool = False, what: str = "texts") -> list[str]:
    """The command line's `texts`, then the lines of `path` (.jsonl: each record's "text"); with
    `stdin`, the lines of standard input when neither gives any. Blank lines of a file are skipped
    unless `stdin` (a translation keeps the empty line of an empty sentence)."""
    found = list(texts)
    if path:
        lines = read_lines(path)
        if path.endswith((".jsonl", ".jsonl.gz")):
            found += _jsonl_texts(path, lines)
        else:
            kept = lines if stdin else [line for line in lines if line.strip()]
            if len(kept) < len(lines):  # said, so that a count of outputs short of the file's lines is explained
                blank = len(lines) - len(kept)
                print(f"{path}: skipped {blank} blank line{'s' * (blank != 1)}", file=sys.stderr)
            found += kept
    if not found and stdin and not sys.stdin.isatty():
        found = sys.stdin.read().splitlines()
    if not found:
        where = ", --input FILE, or lines on standard input" if stdin else ", or --input FILE"
        raise UserError(f"give {what}{where}")
    return found


def _jsonl_texts(path: str, lines: list[str]) -> list[str]:
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            texts.append(str(json.loads(line)["text"]))
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}: line {number} is not a JSON object with a 'text' field") from None
    return texts


def add_top_k_argument(parser: argparse.ArgumentParser, what: str, default: int) -> None:
    """The -k/--top-k flag of a predict command: how many `what` (classes, items) to show."""
    parser.add_argument("-k", "--top-k", type=int, default=None, help=f"how many {what} to show (default {default})")


def checked_top_k(args: argparse.Namespace) -> int | None:
    """--top-k as given (None when not), checked to be at least 1."""
    if args.top_k is not None and args.top_k < 1:
        raise UserError("--top-k must be at least 1")
    return args.top_k


def top_labels(probs: Tensor, labels: list[str], k: int) -> list[list[tuple[str, float]]]:
    """probs (N, C) -> per row the k most probable (label, probability), most probable first
    (k is clipped to [1, C])."""
    k = max(1, min(k, len(labels)))
    values, indices = probs.topk(k, dim=-1)  # (N, k)
    return [
        [(labels[int(i)], float(v)) for v, i in zip(vs, ix, strict=True)]
        for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def output_format(path: str | Path, allowed: tuple[str, ...] = (".csv", ".jsonl")) -> str:
    """The suffix of an --output file, checked against the formats the task writes."""
    suffix = Path(path).suffix
    if suffix not in allowed:
        raise UserError(f"{path}: --output must end in {' or '.join(allowed)}")
    return suffix


def write_records(
    path: str | Path, records: list[dict[str, Any]], *, columns: list[str] | None = None, text_key: str | None = None
) -> None:
    """Write one record per input, by the suffix of `path`: JSON lines (.jsonl); CSV (.csv) with
    `columns` (default: the first record's keys) as its header; or, where the task names a
    `text_key`, plain text (any other suffix) with that field of each record on a line. Atomic."""
    path = Path(path)
    if not text_key:
        output_format(path)
    buffer = io.StringIO()
    if path.suffix == ".jsonl":
        for record in records:
            buffer.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif path.suffix == ".csv":
        columns = columns or (list(records[0]) if records else [])
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for record in records:
            writer.writerow([record[c] for c in columns])
    else:
        buffer.write("".join(f"{record[text_key]}\n" for record in records))
    if path.is_dir():
        raise UserError(f"--output {path}: is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(buffer.getvalue(), encoding="utf-8")
    except OSError as error:
        raise UserError(f"--output {path}: cannot be written ({error.strerror})") from None
