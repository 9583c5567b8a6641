"""Readers of labelled text and of Reuters-21578 SGML."""

from __future__ import annotations

import gzip

import pytest

from attnkit.data.readers import read_ag_news, read_class_names, read_labeled, read_thucnews
from attnkit.data.reuters import read_reuters, reuters_subset, reuters_topics, reuters_unlabeled
from attnkit.errors import DataError


def test_csv_with_header_joins_text_columns(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text('title,body,topic\n"Stocks up","Markets rallied, again",finance\nGoal,Late winner,sports\n')
    data = read_labeled(path, text_columns=["title", "body"], label_column="topic")
    assert data.texts == ["Stocks up. Markets rallied, again", "Goal. Late winner"]
    assert data.labels == ["finance", "sports"]


def test_tsv_without_header_uses_indices(tmp_path):
    path = tmp_path / "news.tsv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("a first text\tx\nsecond\ty\n")
    data = read_labeled(path)
    assert data.texts == ["a first text", "second"] and data.labels == ["x", "y"]
    with pytest.raises(DataError, match="no header row"):
        read_labeled(path, label_column="label")


def test_jsonl_and_its_errors(tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text('{"text": "hello", "label": "a"}\n\n{"text": "bye", "label": 3}\n')
    data = read_labeled(path)
    assert data.labels == ["a", "3"] and data.notes == ["skipped 1 blank line(s)"]
    path.write_text('{"text": "hello"}\n')
    with pytest.raises(DataError, match="line 1 has no field 'label'"):
        read_labeled(path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match="line 1 is not valid JSON"):
        read_labeled(path)


def test_short_rows_and_empty_labels_are_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\nonly text\n")
    with pytest.raises(DataError, match="line 2 has 1 fields"):
        read_labeled(path)
    path.write_text("text,label\nsome text,\n")
    with pytest.raises(DataError, match="empty label"):
        read_labeled(path)


def test_thucnews_form_with_class_file(tmp_path):
    classes = tmp_path / "class.txt"
    classes.write_text("finance\nrealty\nstocks")  # no newline at the end, as shipped
    data_path = tmp_path / "dev.txt"
    data_path.write_text("同步A股首秀：港股缩量回调\t2\n房价又涨了\t1\n")
    data = read_thucnews(data_path, classes)
    assert data.labels == ["stocks", "realty"]
    assert data.texts[0] == "同步A股首秀：港股缩量回调"
    data_path.write_text("标题\t7\n")
    with pytest.raises(DataError, match="label 7 is outside the 3 class names"):
        read_thucnews(data_path, classes)
    assert read_class_names(classes) == ["finance", "realty", "stocks"]


def test_ag_news_csv(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("World\nSports\nBusiness\nSci/Tech\n")
    path = tmp_path / "test.csv"
    path.write_text('"3","Fears for T N pension","Unions representing workers"\n"2","Win","Big win"\n')
    data = read_ag_news(path, classes)
    assert data.labels == ["Business", "Sports"]
    assert data.texts[0] == "Fears for T N pension. Unions representing workers"


SGML = """<!DOCTYPE lewis SYSTEM "lewis.dtd">
<REUTERS TOPICS="YES" LEWISSPLIT="TRAIN" CGISPLIT="TRAINING-SET" OLDID="1" NEWID="1">
<TOPICS><D>earn</D></TOPICS><TEXT>&#2;
<TITLE>PROFIT UP</TITLE><BODY>Profit rose &lt;5 pct&gt;.
 Reuter
&#3;</BODY></TEXT></REUTERS>
<REUTERS TOPICS="YES" LEWISSPLIT="TRAIN" CGISPLIT="TRAINING-SET" OLDID="2" NEWID="2">
<TOPICS><D>earn</D><D>acq</D></TOPICS><TEXT><TITLE>TWO TOPICS</TITLE><BODY>Both.</BODY></TEXT></REUTERS>
<REUTERS TOPICS="YES" LEWISSPLIT="TEST" CGISPLIT="PUBLISHED-TESTSET" OLDID="3" NEWID="3">
<TOPICS><D>acq</D></TOPICS><TEXT><TITLE>BUYS FIRM</TITLE></TEXT></REUTERS>
<REUTERS TOPICS="NO" LEWISSPLIT="TEST" CGISPLIT="PUBLISHED-TESTSET" OLDID="4" NEWID="4">
<TOPICS></TOPICS><TEXT><BODY>Test period story.</BODY></TEXT></REUTERS>
<REUTERS TOPICS="NO" LEWISSPLIT="NOT-USED" CGISPLIT="TRAINING-SET" OLDID="5" NEWID="5">
<TOPICS></TOPICS><TEXT><BODY>Unused story.</BODY></TEXT></REUTERS>
<REUTERS TOPICS="YES" LEWISSPLIT="TEST" CGISPLIT="PUBLISHED-TESTSET" OLDID="6" NEWID="6">
<TOPICS><D>earn</D></TOPICS><TEXT><TITLE>NET</TITLE><BODY>Net up.</BODY></TEXT></REUTERS>
<REUTERS TOPICS="YES" LEWISSPLIT="TRAIN" CGISPLIT="TRAINING-SET" OLDID="7" NEWID="7">
<TOPICS><D>money-fx</D><D>acq</D><D>gold</D></TOPICS><TEXT TYPE="UNPROC">&#2;
RESERVES REPORT - FEB 26
 Net free reserves....644 vs...1,337
&#3;</TEXT></REUTERS>
<REUTERS TOPICS="YES" LEWISSPLIT="TEST" CGISPLIT="PUBLISHED-TESTSET" OLDID="8" NEWID="8">
<TOPICS><D>money-fx</D><D>earn</D></TOPICS><TEXT><TITLE>RATES</TITLE></TEXT></REUTERS>
"""


def test_reuters_modapte_subsets(tmp_path):
    with gzip.open(tmp_path / "reut2-000.sgm.gz", "wt", encoding="latin-1") as handle:
        handle.write(SGML)
    docs = read_reuters(tmp_path)
    assert [d.modapte for d in docs] == ["train", "train", "test", "unused", "unused", "test", "train", "test"]
    assert docs[0].text == "PROFIT UP. Profit rose <5 pct>. Reuter"
    assert docs[2].text == "BUYS FIRM"  # no body: the title alone
    assert docs[6].text == "RESERVES REPORT - FEB 26 Net free reserves....644 vs...1,337"  # TYPE="UNPROC"
    r52_train = reuters_subset(docs, "r52", "train")
    assert r52_train.labels == ["earn"]  # the two-topic story is left out
    r52_test = reuters_subset(docs, "r52", "test")
    assert r52_test.labels == ["earn"]  # acq has no single-topic training story
    assert reuters_subset(docs, "r8", "test").labels == ["acq", "earn"]
    # R90: topics with a training and a test story (acq, earn, money-fx; not gold), every such story.
    assert reuters_topics(docs, "train").labels == ["earn", "acq|earn", "acq|money-fx"]
    assert reuters_topics(docs, "test").labels == ["acq", "earn", "earn|money-fx"]
    unlabeled = reuters_unlabeled(docs)
    assert "Unused story." in unlabeled and "Test period story." not in unlabeled
    assert all("BUYS FIRM" not in t and "NET" not in t for t in unlabeled)


def test_reuters_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no Reuters-21578 files"):
        read_reuters(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label\nhello,a\nbroken, row,b\n", "line 3 has 3 fields, the first line has 2"),
        ("hello,a\nworld,b,extra\n", "line 2 has 3 fields, the first line has 2"),
    ],
)
def test_ragged_rows_are_refused_by_line(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_labeled(path)


def test_a_header_naming_none_of_the_default_columns_is_not_read_as_data(tmp_path):
    path = tmp_path / "news.csv"
    rows = ["sentence,category", "stocks rallied today,finance", "a late winner,sports", "rates held,finance"]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"line 1 looks like a header \(sentence, category\).*--label-column 1"):
        read_labeled(path)
    data = read_labeled(path, text_columns=["sentence"], label_column="category")  # the fix the message gives
    assert data.labels == ["finance", "sports", "finance"]
    numbered = read_labeled(path, text_columns=["0"], label_column="1")  # or: line 1 is data after all
    assert numbered.labels[0] == "category" and len(numbered) == 4


def test_a_first_row_of_data_is_still_data(tmp_path):
    """Short rows whose first label repeats, or whose labels are all unique, are not taken for a header."""
    path = tmp_path / "short.csv"
    path.write_text("good,pos\nbad,neg\nfine,pos\n")
    assert read_labeled(path).texts == ["good", "bad", "fine"]
    path.write_text("one,a\ntwo,b\nthree,c\n")
    assert read_labeled(path).labels == ["a", "b", "c"]


def test_a_nul_byte_is_refused_by_line(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_bytes(b"first\ta\n" + "second\tb\n".encode("utf-16-le"))
    with pytest.raises(DataError, match="line 2 holds a NUL byte; this looks like a binary or UTF-16 file"):
        read_labeled(path)
