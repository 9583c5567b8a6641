"""Readers for parallel text (machine translation): two line-aligned files, one sentence per line
(the Multi30k / WMT form), or one TSV file of pairs. Each returns a `ParallelTexts`.

Files may be gzip-compressed (`.gz`). Lines are kept as they are in the file (no stripping, no
lowercasing); only the line end (`\\n` or `\\r\\n`) is removed. An empty line in a pair of files stays
in place as an empty string, so line i of the source still goes with line i of the target;
`drop_empty` removes such pairs for training and says how many it removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from attnkit.data.readers import read_lines
from attnkit.errors import DataError, UserError


@dataclass
class ParallelTexts:
    """Aligned sentence pairs: `src[i]` translates to `tgt[i]`; and where they came from."""

    src: list[str]
    tgt: list[str]
    src_path: str = ""
    tgt_path: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise ValueError(f"{len(self.src)} source sentences but {len(self.tgt)} target sentences")

    def __len__(self) -> int:
        return len(self.src)


def _is_empty(line: str) -> bool:
    return not line.strip()


def _empty_note(src: list[str], tgt: list[str]) -> list[str]:
    empty = sum(1 for s, t in zip(src, tgt, strict=True) if _is_empty(s) or _is_empty(t))
    return [f"{empty} pair(s) have an empty side (kept in place; drop_empty removes them)"] if empty else []


def read_parallel(src_path: Path | str, tgt_path: Path | str) -> ParallelTexts:
    """Read two line-aligned files: line i of `src_path` translates line i of `tgt_path`.

    Empty (or whitespace-only) lines are kept as they are, so the pairs stay aligned; a note counts
    the pairs with an empty side. Use `drop_empty` before training.

    Args:
        src_path: source-language file, plain text or `.gz`, UTF-8, one sentence per line.
        tgt_path: target-language file, same form.

    Returns:
        ParallelTexts with `len(src) == len(tgt)` == the number of lines of each file.

    Raises:
        DataError: a file is missing, not UTF-8 (naming the line), has no text at all, or the two
            files have different numbers of lines (naming both files and both counts).
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    for path, lines in ((src_path, src), (tgt_path, tgt)):
        if not lines:
            raise DataError(f"{path}: the file is empty")
        if all(_is_empty(line) for line in lines):
            raise DataError(f"{path}: the file has only blank lines ({len(lines)})")
    if len(src) != len(tgt):
        raise DataError(
            f"parallel files differ in length: {src_path} has {len(src)} lines, {tgt_path} has {len(tgt)} lines"
        )
    return ParallelTexts(src, tgt, src_path=str(src_path), tgt_path=str(tgt_path), notes=_empty_note(src, tgt))


def read_tsv_pairs(path: Path | str, src_column: int = 0, tgt_column: int = 1) -> ParallelTexts:
    """Read sentence pairs from a TSV file (no header, no quoting: fields are split at every tab).

    Extra columns are ignored (e.g. the sentence ids of Tatoeba exports). Blank lines are skipped and
    counted in `notes`; a line with text but too few fields is an error. Fields are kept as they are,
    so a pair may have an empty side (see `drop_empty`).

    Args:
        path: the TSV file, plain text or `.gz`, UTF-8.
        src_column: 0-based index of the source sentence's field.
        tgt_column: 0-based index of the target sentence's field.

    Returns:
        ParallelTexts, with `src_path` and `tgt_path` both set to `path`.

    Raises:
        UserError: a column index is negative, or both indices are the same.
        DataError: the file is missing, not UTF-8, has no pairs, or a line has too few fields
            (naming the file and the line number).
    """
    if src_column < 0 or tgt_column < 0:
        raise UserError(f"TSV columns are 0-based field numbers, got src_column={src_column}, tgt_column={tgt_column}")
    if src_column == tgt_column:
        raise UserError(f"src_column and tgt_column are both {src_column}; they must name different fields")
    path = Path(path)
    needed = max(src_column, tgt_column) + 1
    src, tgt, blank = [], [], 0
    for line_no, line in enumerate(read_lines(path), start=1):
        if _is_empty(line):
            blank += 1
            continue
        fields = line.split("\t")
        if len(fields) < needed:
            raise DataError(
                f"{path}: line {line_no} has {len(fields)} tab-separated field(s), expected at least {needed}"
            )
        src.append(fields[src_column])
        tgt.append(fields[tgt_column])
    if not src:
        raise DataError(f"{path}: no sentence pairs found")
    notes = ([f"skipped {blank} blank line(s)"] if blank else []) + _empty_note(src, tgt)
    return ParallelTexts(src, tgt, src_path=str(path), tgt_path=str(path), notes=notes)


def drop_empty(pairs: ParallelTexts) -> tuple[ParallelTexts, int]:
    """The pairs where both sides have text (not only whitespace), and how many pairs were dropped.

    For training data: an empty source or target teaches nothing useful. Keep evaluation sets whole
    (a test set scored on fewer lines than its reference is not comparable), so do not call this on them.

    Raises:
        DataError: no pair is left.
    """
    keep = [i for i, (s, t) in enumerate(zip(pairs.src, pairs.tgt, strict=True)) if not (_is_empty(s) or _is_empty(t))]
    dropped = len(pairs) - len(keep)
    if not keep:
        raise DataError(f"{pairs.src_path}, {pairs.tgt_path}: no pair has text on both sides")
    stale = _empty_note(pairs.src, pairs.tgt)  # no longer true once the empty pairs are gone
    notes = [note for note in pairs.notes if note not in stale]
    if dropped:
        notes.append(f"dropped {dropped} pair(s) with an empty side")
    result = ParallelTexts(
        [pairs.src[i] for i in keep],
        [pairs.tgt[i] for i in keep],
        src_path=pairs.src_path,
        tgt_path=pairs.tgt_path,
        notes=notes,
    )
    return result, dropped
