"""Readers of parallel text: aligned file pairs and TSV pairs, and the real Multi30k files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from attnkit.data.parallel import ParallelTexts, drop_empty, read_parallel, read_tsv_pairs
from attnkit.errors import DataError, UserError

MULTI30K = Path("/work/shared/data/multi30k")
# Line counts from the data's README (each .en file has as many lines as its .de file).
MULTI30K_LINES = {
    "train": 29000,
    "val": 1014,
    "test_2016_flickr": 1000,
    "test_2017_flickr": 1000,
    "test_2017_mscoco": 461,
    "test_2018_flickr": 1071,
}


def test_plain_and_gzip_pairs(tmp_path):
    src = tmp_path / "train.en"
    src.write_text("A dog runs.\r\nTwo men talk.\n", encoding="utf-8")  # CRLF line ends are removed too
    tgt = tmp_path / "train.de.gz"
    with gzip.open(tgt, "wt", encoding="utf-8") as handle:
        handle.write("Ein Hund rennt.\nZwei Männer reden.")  # no newline at the end
    data = read_parallel(src, tgt)
    assert data.src == ["A dog runs.", "Two men talk."]
    assert data.tgt == ["Ein Hund rennt.", "Zwei Männer reden."]
    assert len(data) == 2 and data.notes == []
    assert data.src_path == str(src) and data.tgt_path == str(tgt)


def test_blank_lines_stay_aligned_and_drop_empty_counts(tmp_path):
    src = tmp_path / "a.en"
    tgt = tmp_path / "a.de"
    src.write_text("one\n\nthree\nfour\n  \n")
    tgt.write_text("eins\nzwei\n\nvier\n\n")
    data = read_parallel(src, tgt)
    assert data.src == ["one", "", "three", "four", "  "]
    assert data.tgt == ["eins", "zwei", "", "vier", ""]
    assert data.notes == ["3 pair(s) have an empty side (kept in place; drop_empty removes them)"]
    kept, dropped = drop_empty(data)
    assert dropped == 3
    assert kept.src == ["one", "four"] and kept.tgt == ["eins", "vier"]
    assert kept.notes == ["dropped 3 pair(s) with an empty side"]
    again, dropped = drop_empty(kept)
    assert dropped == 0 and again.src == kept.src and again.notes == kept.notes


def test_line_separators_inside_a_line_do_not_split_it(tmp_path):
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("a\u2028b\x85c\n", encoding="utf-8")  # str.splitlines() would make three lines of it
    tgt.write_text("x\n", encoding="utf-8")
    assert read_parallel(src, tgt).src == ["a\u2028b\x85c"]


def test_different_line_counts_name_both_files(tmp_path):
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("a\nb\nc\n")
    tgt.write_text("x\ny\n")
    with pytest.raises(DataError) as info:
        read_parallel(src, tgt)
    message = str(info.value)
    assert f"{src} has 3 lines" in message and f"{tgt} has 2 lines" in message


def test_empty_missing_and_non_utf8_files(tmp_path):
    full, empty, blank = tmp_path / "full.txt", tmp_path / "empty.txt", tmp_path / "blank.txt"
    full.write_text("a\n")
    empty.write_text("")
    blank.write_text("\n \n")
    with pytest.raises(DataError, match=r"empty\.txt: the file is empty"):
        read_parallel(full, empty)
    with pytest.raises(DataError, match=r"blank\.txt: the file has only blank lines \(2\)"):
        read_parallel(blank, full)
    with pytest.raises(DataError, match="no such file"):
        read_parallel(tmp_path / "missing.txt", full)
    latin = tmp_path / "latin1.de"
    latin.write_bytes("Straße\nMädchen\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.de: line 1 is not valid utf-8"):
        read_parallel(full, latin)
    latin.write_bytes("gut\nStraße\n".encode() + "Mädchen\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 3 is not valid utf-8"):
        read_parallel(latin, latin)


def test_tsv_pairs_columns_blank_lines_and_errors(tmp_path):
    path = tmp_path / "pairs.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("1\tHello.\t9\tHallo.\n\n2\tThanks.\t8\tDanke.\n3\t\t7\tLeer.\n")
    data = read_tsv_pairs(path, src_column=1, tgt_column=3)
    assert data.src == ["Hello.", "Thanks.", ""] and data.tgt == ["Hallo.", "Danke.", "Leer."]
    assert data.notes == [
        "skipped 1 blank line(s)",
        "1 pair(s) have an empty side (kept in place; drop_empty removes them)",
    ]
    assert drop_empty(data)[1] == 1
    plain = tmp_path / "pairs.tsv"
    plain.write_text('"quoted, kept"\tGesagt "so"\n')  # no quoting: quotes are text
    assert read_tsv_pairs(plain).src == ['"quoted, kept"'] and read_tsv_pairs(plain).tgt == ['Gesagt "so"']
    plain.write_text("a\tb\nonly one field\n")
    with pytest.raises(DataError, match=r"pairs\.tsv: line 2 has 1 tab-separated field\(s\), expected at least 2"):
        read_tsv_pairs(plain)
    plain.write_text("\n\n")
    with pytest.raises(DataError, match="no sentence pairs"):
        read_tsv_pairs(plain)
    with pytest.raises(UserError, match="different fields"):
        read_tsv_pairs(plain, src_column=1, tgt_column=1)


def test_drop_empty_with_nothing_left_is_an_error():
    with pytest.raises(DataError, match="no pair has text on both sides"):
        drop_empty(ParallelTexts(["", "a"], ["b", " "]))
    with pytest.raises(ValueError, match="2 source sentences but 1 target"):
        ParallelTexts(["a", "b"], ["c"])


@pytest.mark.skipif(not MULTI30K.is_dir(), reason=f"{MULTI30K} not present")
@pytest.mark.parametrize("split", list(MULTI30K_LINES))
def test_multi30k_line_counts(split):
    raw = read_parallel(MULTI30K / "raw" / f"{split}.en.gz", MULTI30K / "raw" / f"{split}.de.gz")
    tok = read_parallel(
        MULTI30K / "tok" / f"{split}.lc.norm.tok.en.gz", MULTI30K / "tok" / f"{split}.lc.norm.tok.de.gz"
    )
    assert len(raw) == len(tok) == MULTI30K_LINES[split]
    assert raw.notes == [] and drop_empty(raw)[1] == 0  # the README: no file has empty lines
