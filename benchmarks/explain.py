"""Seeing attention (issue #34): what explaining costs, how large and fast the viewer is, and whether
the capture mechanism costs anything when it is off.

1. Per task, on a model of the preset's size (trained for one step: timing does not depend on the
   weights): the time to explain one input (`attnkit.viz.explain`, capture and saliency included,
   no files written) against the time to predict it (`run.predict`), in alternating rounds.
   Target: at most 2x.
2. The viewer: attention.html of a 6-layer, 8-head model at 128, 512 and 1,024 tokens: its size and
   the time from opening it in headless Chromium until it is interactive (the step-by-step table
   drawn). Target: at most 1 s at 512 tokens. Needs Debian's chromium and playwright.
3. The fused path with the capture mechanism in place (MultiHeadAttention routing through `_attend`)
   against the release's MultiHeadAttention, forward passes of a preset-sized encoder in
   alternating rounds. Target: no measurable difference.

    ATTNKIT_DATA=../shared/data python benchmarks/explain.py [--tasks classify,translate,...] [--rounds 20]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.cli import main as attnkit
from attnkit.data.datasets import data_root
from attnkit.runs import open_run
from attnkit.viz.explain import Explanation, MapView, explain
from attnkit.viz.html import render
from benchmarks._common import RESULTS, alternate, machine, round_ratios, write_json, write_section

ROOT = Path(__file__).resolve().parent.parent
RELEASE = "4bb92de"  # the last release before the capture mechanism


def preset_runs(out: Path, tasks: list[str]) -> dict[str, tuple[Path, object]]:
    """task -> (a run of the preset's size trained for one step, one input to explain)."""
    data = data_root()
    out.mkdir(parents=True, exist_ok=True)
    small = out / "data"
    small.mkdir(exist_ok=True)
    m30k = data / "multi30k" / "raw"
    for side, lang in (("src", "de"), ("tgt", "en")):  # eight test pairs: training ends by translating them
        with gzip.open(m30k / f"test_2016_flickr.{lang}.gz", "rt") as handle:
            (small / f"test.{side}").write_text("".join(handle.readlines()[:8]))
    common = ["--max-steps", "1", "--no-progress", "--threads", "2"]
    commands = {
        "classify": (["--dataset", "reuters_r8", "--config", "configs/classify/reuters_r8.yaml"], TEXT),
        "mlm": (["--dataset", "reuters_r8", "--config", "configs/mlm/reuters.yaml"], "oil prices [MASK] sharply"),
        "recommend": (["--data", str(data / "sasrec" / "ml-1m.txt"), "--config", "configs/recommend/ml1m.yaml"], None),
        "translate": (
            [
                "--train-src",
                str(m30k / "train.de.gz"),
                "--train-tgt",
                str(m30k / "train.en.gz"),
                "--valid-src",
                str(m30k / "val.de.gz"),
                "--valid-tgt",
                str(m30k / "val.en.gz"),
                "--test-src",
                str(small / "test.src"),
                "--test-tgt",
                str(small / "test.tgt"),
                "--config",
                "configs/translate/multi30k.yaml",
            ],
            "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
        ),
        "lm": (
            ["--text", str(data / "tinyshakespeare" / "input.txt.gz"), "--config", "configs/lm/shakespeare_char.yaml"],
            "ROMEO: But soft, what light through yonder window breaks?",
        ),
        "vision": (["--dataset", "mnist", "--config", "configs/vision/mnist.yaml"], None),
    }
    runs = {}
    for task in tasks:
        args, example = commands[task]
        run_dir = out / task
        if not (run_dir / "model.safetensors").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"{task}: training the preset's model for one step", flush=True)
            if attnkit(["train", task, *args, *common, "--out", str(run_dir)]) != 0:
                raise SystemExit(f"{task}: could not build the run")
        if task == "recommend":
            example = [str(item) for item in open_run(run_dir).data.items[1:21]]
        if task == "vision":
            example = str(small / "digit.png")
            from attnkit.data.images import load_vision_dataset

            image = load_vision_dataset("mnist", split="test").images[0]  # (1, 28, 28) uint8
            import matplotlib.pyplot as plt

            plt.imsave(example, image[0].numpy(), cmap="gray")
        runs[task] = (run_dir, example)
    return runs


TEXT = (
    "Oil prices rose sharply on Tuesday after the producers' group agreed to extend its output cuts, "
    "lifting the shares of refiners and explorers across European and American markets."
)


def explain_against_predict(runs: dict[str, tuple[Path, object]], rounds: int) -> dict[str, dict[str, float]]:
    rows = {}
    for task, (run_dir, example) in runs.items():
        run = open_run(run_dir)
        inputs = [example]
        # A language model's prediction is a continuation: as long as the one explain generates first.
        options = {"max_new_tokens": 20} if task == "lm" else {}
        timed = {
            "explain": lambda run=run, example=example: explain(run, example),
            "predict": lambda run=run, inputs=inputs, options=options: run.predict(inputs, **options),
        }
        for call in timed.values():
            call()  # warm-up
        times = alternate(timed, rounds, torch.device("cpu"))
        ratio = round_ratios(times["explain"], times["predict"])
        rows[task] = {
            "explain_ms": statistics.median(times["explain"]) * 1000,
            "predict_ms": statistics.median(times["predict"]) * 1000,
            "ratio": ratio["median"],
            "ratio_min": ratio["min"],
            "ratio_max": ratio["max"],
        }
        print(f"{task}: {rows[task]}", flush=True)
    return rows


def viewer(lengths: list[int], rounds: int) -> dict[str, dict[str, float]]:
    """attention.html of a 6-layer, 8-head model at each length: bytes and ms until interactive."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    rows = {}
    folder = Path(tempfile.mkdtemp())
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for length in lengths:
            torch.manual_seed(0)
            maps = [
                MapView(f"encoder.layers.{layer}.self_attn", "self", layer, torch.rand(8, length, length).softmax(-1))
                for layer in range(6)
            ]
            qkv = {name: torch.randn(8, length, 32) for name in ("q", "k", "v")}
            step = {"module": maps[-1].module, **qkv, "keep": torch.ones(length, length, dtype=torch.bool)}
            tokens = [f"t{i}" for i in range(length)]
            path = folder / f"{length}.html"
            path.write_text(render(Explanation("classify", tokens, {"label": "x"}, maps, 0.0, step=step)))
            samples = []
            for _ in range(rounds):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                started = time.perf_counter()
                page.goto(path.as_uri())
                page.wait_for_selector("#step-table")
                samples.append(time.perf_counter() - started)
                page.close()
            rows[str(length)] = {
                "bytes": path.stat().st_size,
                "interactive_ms": statistics.median(samples) * 1000,
                "min_ms": min(samples) * 1000,
                "max_ms": max(samples) * 1000,
            }
            print(f"viewer {length} tokens: {rows[str(length)]}", flush=True)
        browser.close()
    shutil.rmtree(folder)
    return rows


def capture_overhead(rounds: int) -> dict[str, float]:
    """Forward passes of a 4-layer, d_model 256 encoder (batch 32 x 128 tokens) with the release's
    MultiHeadAttention and with today's, the same weights, in alternating rounds."""
    source = subprocess.run(
        ["git", "show", f"{RELEASE}:attnkit/nn/multihead.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    folder = Path(tempfile.mkdtemp())
    (folder / "release_multihead.py").write_text(source)
    spec = importlib.util.spec_from_file_location("release_multihead", folder / "release_multihead.py")
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    from attnkit.nn import Encoder

    torch.manual_seed(0)
    today = Encoder(256, 4, 1024, 4, dropout=0.0, norm_first=True).eval()
    before = Encoder(256, 4, 1024, 4, dropout=0.0, norm_first=True).eval()
    for layer in before.layers:  # the release's attention module, today's weights
        module = release.MultiHeadAttention(256, 4)
        layer.self_attn = module
    before.load_state_dict(today.state_dict())
    x = torch.randn(32, 128, 256)
    with torch.no_grad():
        torch.testing.assert_close(before(x), today(x))
        timed = {"release": lambda: before(x), "today": lambda: today(x)}
        for call in timed.values():
            call()
        times = alternate(timed, rounds, torch.device("cpu"))
    ratio = round_ratios(times["today"], times["release"])
    shutil.rmtree(folder)
    return {
        "release_ms": statistics.median(times["release"]) * 1000,
        "today_ms": statistics.median(times["today"]) * 1000,
        "ratio": ratio["median"],
        "ratio_min": ratio["min"],
        "ratio_max": ratio["max"],
    }


def render_section(results: dict) -> str:
    info = results["machine"]
    lines = [
        "## Seeing attention: explain, the viewer, the capture's cost (issue #34)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}. Reproduce: "
        "`ATTNKIT_DATA=../shared/data python benchmarks/explain.py`. Medians over alternating rounds; "
        "ratios are medians of the per-round ratios, with their range.",
        "",
        "Explaining one input (capture, saliency; no files written) against predicting it (`run.predict`: "
        "translate with the run's beam search, lm continuing the prompt by the 20 tokens explain generates "
        "first), models of the presets' sizes trained for one step (target: at most 2x):",
        "",
        "| task | explain ms | predict ms | explain / predict | range |",
        "|---|---:|---:|---:|---|",
    ]
    for task, row in results.get("tasks", {}).items():
        lines.append(
            f"| {task} | {row['explain_ms']:.1f} | {row['predict_ms']:.1f} | {row['ratio']:.2f}x | "
            f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f} |"
        )
    if results.get("viewer"):
        lines += [
            "",
            "attention.html of a 6-layer, 8-head model in headless Chromium (target: interactive within 1 s at 512 "
            "tokens):",
            "",
            "| tokens | size | until interactive (ms) | range |",
            "|---:|---:|---:|---|",
        ]
        for length, row in results["viewer"].items():
            lines.append(
                f"| {length} | {row['bytes'] / 1e6:.2f} MB | {row['interactive_ms']:.0f} | "
                f"{row['min_ms']:.0f}–{row['max_ms']:.0f} |"
            )
    overhead = results.get("overhead")
    if overhead:
        lines += [
            "",
            "The fused path with the capture mechanism in place against the release's attention module "
            "(4-layer encoder, d_model 256, batch 32 x 128 tokens; target: no measurable difference): "
            f"{overhead['release_ms']:.1f} ms against {overhead['today_ms']:.1f} ms, ratio "
            f"{overhead['ratio']:.3f} (rounds {overhead['ratio_min']:.3f}–{overhead['ratio_max']:.3f}).",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="classify,mlm,recommend,translate,lm,vision")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--lengths", default="128,512,1024", help="viewer test lengths in tokens")
    parser.add_argument("--out", default="runs/bench-explain", help="where the one-step runs go")
    parser.add_argument(
        "--skip-viewer", action="store_true", help="keep the viewer's figures from the last saved results"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    results: dict = {"machine": machine()}
    tasks = [t for t in args.tasks.split(",") if t]
    if tasks:
        results["tasks"] = explain_against_predict(preset_runs(ROOT / args.out, tasks), args.rounds)
    if not args.skip_viewer:
        results["viewer"] = viewer([int(x) for x in args.lengths.split(",")], max(3, args.rounds // 4))
    elif (RESULTS / "explain.json").exists():  # the viewer does not depend on the model's kernels
        results["viewer"] = json.loads((RESULTS / "explain.json").read_text()).get("viewer")
    results["overhead"] = capture_overhead(args.rounds)
    write_json("explain", results)
    write_section("explain", render_section(results))
    print(render_section(results))


if __name__ == "__main__":
    main()
