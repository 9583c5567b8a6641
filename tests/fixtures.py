"""Small synthetic labelled news files for tests: three topics told apart by their words."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

TOPICS = {
    "sports": ["match", "goal", "team", "player", "coach", "league", "season", "striker", "win", "cup"],
    "finance": ["stock", "market", "shares", "profit", "bank", "trade", "investor", "dividend", "rates", "earnings"],
    "science": ["research", "cells", "physics", "space", "study", "lab", "telescope", "genome", "experiment", "theory"],
}
FILLER = ["the", "a", "of", "in", "on", "said", "today", "new", "report", "after", "week", "this"]


def make_texts(n: int, seed: int, min_words: int = 6, max_words: int = 14) -> list[tuple[str, str]]:
    """n (text, label) pairs, labels cycling through the topics."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    out = []
    for i in range(n):
        label = names[i % len(names)]
        words = [
            rng.choice(TOPICS[label]) if rng.random() < 0.6 else rng.choice(FILLER)
            for _ in range(rng.randint(min_words, max_words))
        ]
        out.append((" ".join(words), label))
    return out


def write_csv(path: Path, rows: list[tuple[str, str]], header: bool = True) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w") as handle:
        for text, label in rows:
            handle.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


TINY_MODEL = [
    "--d-model",
    "32",
    "--n-heads",
    "2",
    "--n-layers",
    "1",
    "--d-ff",
    "64",
    "--vocab-size",
    "200",
    "--max-len",
    "32",
    "--batch-size",
    "8",
    "--warmup-steps",
    "5",
    "--lr",
    "3e-3",
    "--no-progress",
    "--threads",
    "1",
]
