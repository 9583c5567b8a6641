"""User-item interaction files for sequential recommendation, and the leave-one-out split.

Formats, told apart by name and content:
- SASRec text (`user item` per line, whitespace-separated, chronological within each user), as
  the reference implementations read `data/ml-1m.txt`;
- CSV `user,item[,rating][,timestamp]` (a header row is recognised by its non-numeric columns);
- MovieLens `ratings.dat` (`user::item::rating::timestamp`).
Every interaction is implicit feedback. With timestamps, each user's items are sorted by time
(stably, so ties keep file order); without, file order is the order. Ids are remapped densely to
1..N (0 is padding), numerically sorted when all ids are integers, so files that are already
dense (as the SASRec ones are) keep their ids.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from attnkit.data.readers import read_lines
from attnkit.errors import DataError

Duplicates = Literal["error", "drop", "keep"]


@dataclass
class Interactions:
    """Each user's chronological item sequence, in dense internal ids.

    Attributes:
        sequences: sequences[u] = item ids (1..n_items) of internal user u (0-based), oldest first.
        users: original user id of each internal user.
        items: items[i] = original id of internal item i (items[0] = "" for padding).
        source: the file read; notes: what the reader dropped or changed, for the log.
    """

    sequences: list[list[int]]
    users: list[str]
    items: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return len(self.items) - 1

    @property
    def n_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)


def read_interactions(
    path: str | Path,
    *,
    min_count: int = 0,
    duplicates: Duplicates = "error",
) -> Interactions:
    """Read an interaction file (format from its name and content) into dense sequences.

    Args:
        path: SASRec `user item` text, `user,item[,rating][,timestamp]` CSV, or MovieLens ratings.dat.
        min_count: k-core filter: repeatedly drop items and users with fewer than this many
            interactions (0 = keep everything).
        duplicates: a repeated (user, item[, timestamp]) line is an "error" (default: usually a
            mistake in preparing the file), is dropped ("drop", keeping the first), or "keep".
    """
    path = Path(path)
    rows, line_numbers = _parse(path)
    if not rows:
        raise DataError(f"{path}: no interactions (the file is empty)")
    notes: list[str] = []
    rows = _handle_duplicates(path, rows, line_numbers, duplicates, notes)
    by_user: dict[str, list[tuple[float, int, str]]] = {}
    timed = rows[0][2] is not None
    for order, (user, item, time) in enumerate(rows):
        by_user.setdefault(user, []).append((time if timed else 0.0, order, item))
    sequences_raw = {user: [item for _t, _o, item in sorted(events)] for user, events in by_user.items()}
    if min_count > 0:
        sequences_raw = _k_core(sequences_raw, min_count, notes)
        if not sequences_raw:
            raise DataError(f"{path}: nothing is left after the {min_count}-core filter")
    users = _sorted_ids(sequences_raw)
    items = _sorted_ids({item: None for seq in sequences_raw.values() for item in seq})
    index = {item: i + 1 for i, item in enumerate(items)}
    sequences = [[index[item] for item in sequences_raw[user]] for user in users]
    return Interactions(sequences, users, ["", *items], str(path), notes)


def _parse(path: Path) -> tuple[list[tuple[str, str, float | None]], list[int]]:
    """(user, item, timestamp or None) per interaction, in file order, and their line numbers."""
    lines = read_lines(path)
    name = path.name.removesuffix(".gz")
    if name.endswith(".dat") or (lines and "::" in lines[0]):
        return _parse_fields(path, ((number, line.split("::")) for number, line in _numbered(lines)), timed=True)
    if name.endswith(".csv"):
        records = list(csv.reader(io.StringIO("\n".join(lines))))
        numbered = [(n + 1, r) for n, r in enumerate(records) if r and any(c.strip() for c in r)]
        if numbered and not _is_number(numbered[0][1][0]) and not _is_number(numbered[0][1][1:2] or ["x"]):
            numbered = numbered[1:]  # header row
        width = len(numbered[0][1]) if numbered else 0
        return _parse_fields(path, numbered, timed=width >= 4 or (width == 3 and _looks_like_time(numbered)))
    return _parse_fields(path, ((number, line.split()) for number, line in _numbered(lines)), timed=None)


def _numbered(lines: list[str]):
    return ((number, line) for number, line in enumerate(lines, start=1) if line.strip())


def _parse_fields(path: Path, records, *, timed: bool | None) -> tuple[list[tuple[str, str, float | None]], list[int]]:
    """Check each record: user and item integers, an optional numeric timestamp (last column)."""
    rows: list[tuple[str, str, float | None]] = []
    lines: list[int] = []
    width = None
    for number, fields in records:
        fields = [f.strip() for f in fields]
        if width is None:
            width = len(fields)
            if timed is None:
                timed = width >= 3
        if len(fields) < 2:
            raise DataError(f"{path}: line {number} has {len(fields)} column(s); expected user and item")
        if len(fields) != width:
            raise DataError(f"{path}: line {number} has {len(fields)} columns, the first line has {width}")
        user, item = fields[0], fields[1]
        for what, value in (("user", user), ("item", item)):
            if not is_integer_id(value):
                raise DataError(f"{path}: line {number}: {what} id {value!r} is not a non-negative integer")
        time = None
        if timed:
            try:
                time = float(fields[-1])
            except ValueError:
                time = math.nan
            if not math.isfinite(time):
                raise DataError(f"{path}: line {number}: timestamp {fields[-1]!r} is not a finite number")
        rows.append((str(int(user)), str(int(item)), time))
        lines.append(number)
    return rows, lines


def is_integer_id(text: str) -> bool:
    """Whether `text` is a non-negative integer in ASCII digits ("²" and "٣" are digits to Python's
    `isdigit` but not to `int`)."""
    return text.isascii() and text.isdigit()


def _is_number(fields: list[str]) -> bool:
    try:
        float(fields[0])
        return True
    except (ValueError, IndexError):
        return False


def _looks_like_time(numbered) -> bool:
    """A third CSV column is a timestamp rather than a rating when it exceeds rating scales."""
    return any(_is_number([r[2]]) and float(r[2]) > 100 for _n, r in numbered[:100])


def _handle_duplicates(path: Path, rows, line_numbers: list[int], duplicates: Duplicates, notes: list[str]):
    if duplicates == "keep":
        return rows
    first_line: dict[tuple, int] = {}
    kept = []
    for number, row in zip(line_numbers, rows, strict=True):
        if row in first_line:
            if duplicates == "error":
                raise DataError(
                    f"{path}: line {number} (user {row[0]}, item {row[1]}) repeats line "
                    f"{first_line[row]}; pass --duplicates drop or --duplicates keep"
                )
            continue
        first_line[row] = number
        kept.append(row)
    if len(kept) < len(rows):
        notes.append(f"dropped {len(rows) - len(kept)} duplicate interactions")
    return kept


def _k_core(sequences: dict[str, list[str]], k: int, notes: list[str]) -> dict[str, list[str]]:
    """Drop items, then users, with fewer than k interactions, until nothing changes."""
    before = sum(len(s) for s in sequences.values())
    while True:
        counts: dict[str, int] = {}
        for seq in sequences.values():
            for item in seq:
                counts[item] = counts.get(item, 0) + 1
        filtered = {u: [i for i in s if counts[i] >= k] for u, s in sequences.items()}
        filtered = {u: s for u, s in filtered.items() if len(s) >= k}
        if sum(len(s) for s in filtered.values()) == sum(len(s) for s in sequences.values()):
            break
        sequences = filtered
    after = sum(len(s) for s in sequences.values())
    if after < before:
        notes.append(f"{k}-core filter kept {after:,} of {before:,} interactions")
    return sequences


def _sorted_ids(ids) -> list[str]:
    keys = list(ids)
    return sorted(keys, key=int) if all(is_integer_id(k) for k in keys) else sorted(keys)


@dataclass
class LeaveOneOut:
    """The paper's split: per user, last item test, second-to-last validation, the rest training.

    Users with fewer than 3 items keep them all in training and are not evaluated
    (`valid_target[u] = test_target[u] = 0`).
    """

    train: list[list[int]]
    valid_target: list[int]
    test_target: list[int]
    too_short: int


def leave_one_out(sequences: list[list[int]]) -> LeaveOneOut:
    """Split every user's sequence (see `LeaveOneOut`)."""
    train, valid, test, short = [], [], [], 0
    for seq in sequences:
        if len(seq) < 3:
            train.append(list(seq))
            valid.append(0)
            test.append(0)
            short += 1
        else:
            train.append(list(seq[:-2]))
            valid.append(seq[-2])
            test.append(seq[-1])
    return LeaveOneOut(train, valid, test, short)


def read_item_names(path: str | Path) -> dict[str, str]:
    """Original item id -> display name, from MovieLens movies.dat (`id::title::genres`), a
    `id<TAB>name` file, or a CSV with id and name in its first two columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # MovieLens-1M's movies.dat is Latin-1
    names: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if "::" in line:
            fields = line.split("::")
        elif "\t" in line:
            fields = line.split("\t")
        else:
            fields = next(csv.reader([line]))
        if len(fields) < 2:
            raise DataError(f"{path}: line {number} has no name column")
        key = fields[0].strip()
        names[str(int(key)) if is_integer_id(key) else key] = fields[1].strip()
    return names
