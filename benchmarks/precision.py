"""The quality cost of reduced-precision inference (issue #36): trained runs evaluated at fp32, bf16, int8.

Each run is copied to a scratch folder (evaluate writes metrics.json and hypothesis files into a
run) and evaluated with `attnkit evaluate COPY --precision P`, each precision in a process of its
own; the wall time of the command is recorded beside the metric. The same weights at every
precision, so the differences are the cost of the precision alone.

Targets: within 0.3 points of float32 (accuracy in %, BLEU), within 0.005 for NDCG@10.

    ATTNKIT_DATA=../shared/data python benchmarks/precision.py \\
        --run r8=runs/demo-reuters-r8 --run de-en=runs/bench-translate/multi30k-de-en ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS, machine, write_json, write_section

PRECISIONS = ("fp32", "bf16", "int8")
# task -> (metric key in evaluate's output, shown as, scale to points, allowed cost in those points)
HEADLINE = {
    "classify": ("accuracy", "accuracy %", 100.0, 0.3),
    "vision": ("accuracy", "accuracy %", 100.0, 0.3),
    "translate": ("tok_bleu", "tokenized BLEU", 1.0, 0.3),
    "recommend": ("sampled_ndcg@10", "NDCG@10 (sampled)", 1.0, 0.005),
}


def evaluate(run_dir: Path, precision: str, threads: int) -> tuple[dict[str, float], float]:
    """(metrics, seconds) of `attnkit evaluate` on a copy of the run at `precision`."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("last", "checkpoints", "*.png"))
        command = [sys.executable, "-m", "attnkit", "evaluate", str(copy), "--precision", precision]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1]), seconds


def render(results: dict[str, object]) -> str:
    m = results["machine"]
    lines = [
        "## Reduced-precision inference: the quality cost (issue #36)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}. Reproduce: `ATTNKIT_DATA=../shared/data "
        "python benchmarks/precision.py "
        + " ".join(f"--run {n}={r['run']}" for n, r in results["runs"].items())
        + "`. "
        "Each trained run evaluated on its test set by `attnkit evaluate RUN --precision P` (same weights; "
        "int8: dynamically quantized linear layers; bf16: all weights and activations). Time: the whole "
        "command (loading, data, model) on 2 threads.",
        "",
        "| run | metric | fp32 | bf16 | int8 | cost bf16 | cost int8 | allowed | time fp32 / bf16 / int8 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    verdicts = []
    for name, row in results["runs"].items():
        key, shown, scale, allowed = HEADLINE[row["task"]]
        value = {p: row["metrics"][p][key] * scale for p in PRECISIONS}
        costs = {p: value["fp32"] - value[p] for p in ("bf16", "int8")}
        verdicts += [(name, p, costs[p] <= allowed) for p in costs]
        digits = 4 if scale == 1.0 and allowed < 0.1 else 2
        times = " / ".join(f"{row['seconds'][p]:.0f} s" for p in PRECISIONS)
        values = " | ".join(f"{value[p]:.{digits}f}" for p in PRECISIONS)
        cost = " | ".join(f"{costs[p]:+.{digits}f}" for p in ("bf16", "int8"))
        lines.append(f"| {name} | {shown} | {values} | {cost} | {allowed} | {times} |")
    missed = [f"{n} {p}" for n, p, ok in verdicts if not ok]
    lines += [
        "",
        "Cost = float32 − reduced precision (positive: worse). Target: at most 0.3 points of accuracy or BLEU, "
        f"0.005 of NDCG@10: **{'met everywhere' if not missed else 'missed for ' + ', '.join(missed)}**.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR (repeat)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--render-only", action="store_true", help="re-render BENCHMARKS.md from the saved JSON")
    args = parser.parse_args()
    path = RESULTS / "precision.json"
    if args.render_only:
        results = json.loads(path.read_text())
    else:
        results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
        results["machine"] = machine()
        for item in args.run:
            name, _, run = item.partition("=")
            task = json.loads((Path(run) / "config.json").read_text())["task"]
            row = {"run": run, "task": task, "metrics": {}, "seconds": {}}
            for precision in PRECISIONS:
                row["metrics"][precision], row["seconds"][precision] = evaluate(Path(run), precision, args.threads)
                print(name, precision, row["metrics"][precision], f"{row['seconds'][precision]:.0f} s", flush=True)
            results["runs"][name] = row
            write_json("precision", results)  # each run kept as soon as it is measured
    print(render(results))
    write_section("precision", render(results))


if __name__ == "__main__":
    main()
