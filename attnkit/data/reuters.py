"""Reuters-21578 (Lewis 1997): the SGML distribution, the ModApte split and its R8 / R52 subsets.

ModApte: train = LEWISSPLIT="TRAIN" TOPICS="YES", test = LEWISSPLIT="TEST" TOPICS="YES".
R8: single-topic documents whose topic is among the 10 most frequent ModApte training topics
(counting every label of every document); only 8 of those 10 have single-topic documents.
R52: single-topic documents whose topic has at least one such document in train and one in test.
R90 (multi-label): the 90 topics with at least one ModApte training and one test document, and the
documents with at least one of them (7,769 train / 3,019 test), labelled by all of their 90-topic
topics.
A document's text is its title and body (title alone when there is no body).
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from attnkit.data.readers import LabeledTexts, read_lines
from attnkit.errors import DataError

_DOC = re.compile(r"<REUTERS(?P<attrs>[^>]*)>(?P<body>.*?)</REUTERS>", re.S)
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_TOPICS = re.compile(r"<TOPICS>(.*?)</TOPICS>", re.S)
_D = re.compile(r"<D>(.*?)</D>", re.S)
_TITLE = re.compile(r"<TITLE>(.*?)</TITLE>", re.S)
_BODY = re.compile(r"<BODY>(.*?)</BODY>", re.S)
_TEXT = re.compile(r"<TEXT[^>]*>(.*?)</TEXT>", re.S)
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class ReutersDoc:
    """One story: its id, ModApte role ("train", "test" or "unused"), Lewis split, topics and text."""

    newid: int
    modapte: str
    lewis_split: str
    topics: tuple[str, ...]
    text: str


def read_reuters(data_dir: Path | str) -> list[ReutersDoc]:
    """Parse every reut2-*.sgm(.gz) file in `data_dir` (Latin-1)."""
    data_dir = Path(data_dir)
    files = sorted(data_dir.glob("reut2-*.sgm")) + sorted(data_dir.glob("reut2-*.sgm.gz"))
    if not files:
        raise DataError(f"{data_dir}: no Reuters-21578 files (reut2-000.sgm ... reut2-021.sgm[.gz]) found")
    docs = []
    for path in files:
        text = "\n".join(read_lines(path, encoding="latin-1"))
        for match in _DOC.finditer(text):
            docs.append(_parse(match.group("attrs"), match.group("body")))
    if not docs:
        raise DataError(f"{data_dir}: no <REUTERS> documents found in the SGML files")
    return docs


def _parse(attrs: str, body: str) -> ReutersDoc:
    fields = dict(_ATTR.findall(attrs))
    topics_block = _TOPICS.search(body)
    topics = tuple(_D.findall(topics_block.group(1))) if topics_block else ()
    title = _clean(_TITLE.search(body))
    text_body = _clean(_BODY.search(body))
    text = f"{title}. {text_body}" if title and text_body else (title or text_body)
    if not text:  # TYPE="UNPROC" stories (tables, briefs) hold their text in <TEXT> directly
        whole = _TEXT.search(body)
        text = _clean_text(_TAG.sub(" ", whole.group(1))) if whole else ""
    split, has_topics = fields.get("LEWISSPLIT", ""), fields.get("TOPICS", "")
    modapte = "unused"
    if has_topics == "YES" and split in ("TRAIN", "TEST"):
        modapte = split.lower()
    return ReutersDoc(int(fields.get("NEWID", "0")), modapte, split, topics, text)


def _clean(match: re.Match[str] | None) -> str:
    return "" if match is None else _clean_text(match.group(1))


def _clean_text(text: str) -> str:
    text = html.unescape(text)
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def reuters_subset(docs: list[ReutersDoc], subset: str, split: str) -> LabeledTexts:
    """The R8 or R52 documents of the ModApte train or test split, labelled by their one topic."""
    if subset not in ("r8", "r52"):
        raise DataError(f"unknown Reuters subset {subset!r}: use r8 or r52")
    single = [d for d in docs if d.modapte in ("train", "test") and len(d.topics) == 1]
    if subset == "r8":
        counts = Counter(t for d in docs if d.modapte == "train" for t in d.topics)
        allowed = {topic for topic, _ in counts.most_common(10)}
    else:
        in_train = {d.topics[0] for d in single if d.modapte == "train"}
        in_test = {d.topics[0] for d in single if d.modapte == "test"}
        allowed = in_train & in_test
    chosen = [d for d in single if d.modapte == split and d.topics[0] in allowed]
    return LabeledTexts(
        [d.text for d in chosen], [d.topics[0] for d in chosen], source=f"reuters21578 {subset} {split}"
    )


LABEL_SEPARATOR = "|"


def reuters_topics(docs: list[ReutersDoc], split: str) -> LabeledTexts:
    """The R90 documents of the ModApte train or test split, each labelled by its set of topics.

    A label is the document's topics among the 90, sorted and joined by `LABEL_SEPARATOR` ("|"),
    the form `attnkit train classify --multi-label` reads from files too.
    """
    if split not in ("train", "test"):
        raise DataError(f"unknown ModApte split {split!r}: use train or test")
    in_train = {t for d in docs if d.modapte == "train" for t in d.topics}
    in_test = {t for d in docs if d.modapte == "test" for t in d.topics}
    allowed = in_train & in_test
    texts, labels = [], []
    for doc in docs:
        topics = sorted(set(doc.topics) & allowed)
        if doc.modapte == split and topics:
            texts.append(doc.text)
            labels.append(LABEL_SEPARATOR.join(topics))
    return LabeledTexts(texts, labels, source=f"reuters21578 r90 {split}")


def reuters_unlabeled(docs: list[ReutersDoc]) -> list[str]:
    """Stories usable for pre-training: ModApte training and unused stories, never a test-period one."""
    return [d.text for d in docs if d.lewis_split != "TEST" and d.text]
