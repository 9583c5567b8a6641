"""`attnkit explain RUN_DIR ...`: the command each task registers, with the inputs its runs take."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.atomic import atomic_path
from attnkit.errors import UserError
from attnkit.tasks.base import Command
from attnkit.tasks.io import read_inputs
from attnkit.viz.explain import explain

FORMATS = ("png", "json", "html")
WHAT = {
    "classify": "texts to classify",
    "mlm": "texts with [MASK] tokens",
    "translate": "sentences to translate",
    "lm": "prompts",
    "vision": "image files, or indices of the run's test set",
}


def explain_command(task: str) -> Command:
    """The `explain` command of `task`'s runs."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        if task == "recommend":
            parser.add_argument("--user", help="a user id of the run's data")
            parser.add_argument("--history", help="item ids, oldest first: 12,45,7")
        else:
            parser.add_argument("inputs", nargs="*", help=WHAT[task])
            if task != "vision":
                parser.add_argument("--input", help="file of inputs: one per line, or JSON lines with a 'text' field")
        if task == "lm":
            parser.add_argument("--max-new-tokens", type=int, default=20, help="continue the prompt greedily first")
        parser.add_argument("--layer", type=int, help="only this layer's maps (default: all)")
        parser.add_argument("--head", type=int, help="only this head (default: all)")
        parser.add_argument(
            "--format", default="png,json,html", help="comma-separated: png, json, html (default all three)"
        )
        parser.add_argument("--out", help="folder to write to (default RUN_DIR/explain; one subfolder per input)")
        parser.add_argument(
            "--summary",
            action="store_true",
            help="instead of single inputs, summarise attention over the run's own evaluation data: by offset, "
            "entropy, mass on the first token and on padding (SASRec: by recency; ViT: distance in pixels)",
        )
        parser.add_argument("--limit", type=int, default=200, help="--summary: how many inputs (default 200)")

    return Command(add_arguments, lambda run, args: _run(run, args, task), f"{task}: attention maps of inputs.")


def _run(run: Any, args: argparse.Namespace, task: str) -> int:
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format {args.format}: choose from {', '.join(FORMATS)}")
    out = Path(args.out) if args.out else run.run_dir / "explain"
    if args.summary:
        return _summary(run, args, out)
    items = _inputs(run, args, task)
    options = {"max_new_tokens": args.max_new_tokens} if task == "lm" else {}
    for index, item in enumerate(items):
        explanation = explain(run, item, step_layer=args.layer, **options)
        folder = out if len(items) == 1 else out / str(index)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        if "json" in formats:
            data = explanation.to_json(args.layer, args.head)
            with atomic_path(folder / "attention.json") as tmp:
                tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
            written.append(folder / "attention.json")
        if "html" in formats:
            explanation.to_html(folder / "attention.html")
            written.append(folder / "attention.html")
        if "png" in formats:
            written += explanation.to_png(folder, args.layer, args.head)
        print(f"{_shown(item)}: prediction {json.dumps(explanation.prediction, ensure_ascii=False)}")
        print(f"  fidelity: max |captured - fused output| = {explanation.fidelity:.2e}")
        print(f"  wrote {len(written)} file{'s' * (len(written) != 1)} to {folder}")
    return 0


def _summary(run: Any, args: argparse.Namespace, out: Path) -> int:
    from attnkit.viz.summary import plot, summarise

    summary = summarise(run, args.limit)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary), encoding="utf-8")
    written = [out / "summary.json", *plot(summary, out)]
    print(f"summarised {summary['inputs']} inputs over {len(summary['modules'])} attention modules")
    print(f"  wrote {len(written)} file{'s' * (len(written) != 1)} to {out}")
    return 0


def _inputs(run: Any, args: argparse.Namespace, task: str) -> list[Any]:
    if task == "recommend":
        if bool(args.user) == bool(args.history):
            raise UserError("give either --user ID or --history ITEMS")
        if args.user:
            return [[run.data.items[i] for i in run.user_history(args.user)]]
        return [[part.strip() for part in args.history.split(",") if part.strip()]]
    if task == "vision":
        if not args.inputs:
            raise UserError("give image files (or test-set indices) to explain: attnkit explain RUN_DIR image.png 7")
        return [
            _test_image(run, item, args) if item.isdigit() and not Path(item).exists() else item for item in args.inputs
        ]
    return read_inputs(args.inputs, args.input, what=WHAT[task])


def _test_image(run: Any, index: str, args: argparse.Namespace) -> str:
    """The image at `index` of the run's own test split, written as a PNG file into the output folder
    (test-<index>-<label>.png); its path is explained as any image file is."""
    from PIL import Image

    from attnkit.tasks.vision import read_splits

    if "source" in run.config:
        raise UserError(f"{run.run_dir} was imported, not trained on a dataset: give image files, not {index}")
    test = read_splits(run.options)[1]
    if int(index) >= len(test):
        raise UserError(f"test-set index {index} is out of range: the test split has {len(test)} images")
    out = Path(args.out) if args.out else run.run_dir / "explain"
    out.mkdir(parents=True, exist_ok=True)
    pixels = test.images[int(index)].permute(1, 2, 0).numpy()  # (H, W, C) uint8
    path = out / f"test-{index}-{test.classes[int(test.labels[int(index)])]}.png"
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(path)
    return str(path)


def _shown(item: Any) -> str:
    text = item if isinstance(item, str) else ",".join(map(str, item))
    return text if len(text) <= 60 else text[:57] + "..."
