"""k-fold cross-validation of a classification preset against one variant, on training stories only.

Choosing between two presets on the test split is selection on test; a single 10% validation slice
(549 R8 stories) is too small to see a 0.2-point difference. This script splits the training split
into k stratified folds and, for each fold, trains the preset and the variant on the other k-1 folds
(each run holds out its own validation slice exactly as the preset does) and scores both on the
fold. The test split is never read. The decision rule is fixed before the run: the variant replaces
the preset only if its accuracy over all k folds together is higher (ties keep the preset).

    ATTNKIT_DATA=../shared/data python benchmarks/classify_cv.py --dataset reuters_r8 \
        --variant weight_decay=0.1 [--folds 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.data.datasets import load_classification
from attnkit.engine import TrainConfig
from attnkit.options import build, load_preset
from attnkit.tasks import classify
from benchmarks._common import machine, write_json

ROOT = Path(__file__).resolve().parent.parent


def write_fold(path: Path, texts: list[str], labels: list[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for text, label in zip(texts, labels, strict=True):
            f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")


def parse_variant(text: str) -> dict[str, object]:
    """`key=value[,key=value]` with values read as YAML scalars would be (numbers stay numbers)."""
    variant: dict[str, object] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if not value:
            raise SystemExit(f"--variant: expected key=value, got {item!r}")
        try:
            variant[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            variant[key.strip()] = value
    return variant


def run(preset: str, overrides: dict[str, object], train: Path, test: Path, out: Path, seed: int) -> dict:
    values = load_preset(str(ROOT / "configs" / "classify" / f"{preset}.yaml"))
    values.pop("dataset", None)
    values.update(overrides)
    given = {"out": str(out), "train": str(train), "test": str(test), "progress": False, "threads": 2, "seed": seed}
    options = build(classify.ClassifyOptions, values, given)
    train_config = build(TrainConfig, classify.TRAIN_DEFAULTS, values, given)
    start = time.perf_counter()
    metrics = classify.train(options, train_config, log=lambda m: None)
    return {"accuracy": 100 * metrics["accuracy"], "seconds": time.perf_counter() - start}


def main() -> None:
    from sklearn.model_selection import StratifiedKFold

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="reuters_r8", help="standard dataset whose training split is folded")
    parser.add_argument("--preset", help="preset name under configs/classify (default: the dataset's)")
    parser.add_argument("--variant", required=True, help="the change to compare, e.g. weight_decay=0.1")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="fold split and training seed (the same for both)")
    parser.add_argument("--out", default="runs/bench-classify-cv")
    args = parser.parse_args()
    torch.set_num_threads(2)
    preset = args.preset or args.dataset
    variant = parse_variant(args.variant)
    train = load_classification(args.dataset).train
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
    rows = []
    for fold, (fit_index, held_index) in enumerate(folds.split(train.texts, train.labels)):
        fit_path, held_path = out / f"fold{fold}-train.jsonl", out / f"fold{fold}-held.jsonl"
        write_fold(fit_path, [train.texts[i] for i in fit_index], [train.labels[i] for i in fit_index])
        write_fold(held_path, [train.texts[i] for i in held_index], [train.labels[i] for i in held_index])
        row = {"fold": fold, "stories": len(held_index)}
        for name, overrides in (("preset", {}), ("variant", variant)):
            row[name] = run(preset, overrides, fit_path, held_path, out / f"fold{fold}-{name}", args.seed)
        rows.append(row)
        print(
            f"fold {fold} ({len(held_index)} stories): preset {row['preset']['accuracy']:.2f}  "
            f"variant {row['variant']['accuracy']:.2f}",
            flush=True,
        )
    total = sum(r["stories"] for r in rows)
    pooled = {name: sum(r[name]["accuracy"] * r["stories"] for r in rows) / total for name in ("preset", "variant")}
    wins = sum(r["variant"]["accuracy"] > r["preset"]["accuracy"] for r in rows)
    verdict = "adopt the variant" if pooled["variant"] > pooled["preset"] else "keep the preset"
    print(
        f"{args.folds}-fold accuracy over {total} training stories: preset {pooled['preset']:.2f}, "
        f"variant {args.variant} {pooled['variant']:.2f}; the variant wins {wins} of {args.folds} folds: {verdict}",
        flush=True,
    )
    write_json(
        f"classify_cv-{args.dataset}",
        {
            "machine": machine(),
            "command": " ".join(["python benchmarks/classify_cv.py", *sys.argv[1:]]),
            "preset": preset,
            "variant": variant,
            "folds": rows,
            "pooled_accuracy": pooled,
            "variant_wins": wins,
            "verdict": verdict,
        },
    )


if __name__ == "__main__":
    main()
