"""Which CPU kernel multiplies a decoding step's rows by its weights fastest (docs/experiments/prepacked-linear.md).

One pass over the weight matrices of a decoder, multiplied by M rows each (M = 1, 8, 64, 512), through:

- `F.linear` on the weight as `nn.Linear` stores it, (out, in);
- `F.linear` on the same values stored column-major, i.e. the (in, out) matrix contiguous;
- oneDNN's prepacked weight (`torch.ops.mkldnn._linear_pointwise` on `_reorder_linear_weight`, what
  `attnkit.nn.packed.PackedLinear` holds), packed for 1, 8 and 64 expected rows;
- at one row, the whole pass compiled with `torch.compile`, each product written as an elementwise
  multiply summed over the input (what `PackedLinear` becomes inside a compiled decoding step).

Weight sets: GPT-2 small's 12 blocks (q/k/v fused, attention output, two feed-forward layers; 340 MB,
far beyond the caches) and its tied output layer (50,257 x 768), and the Multi30k translator's
decoder step (3 layers, d_model 256, and its 8,000-piece output layer; 19 MB). Milliseconds per pass,
median of passes, one process, nothing else running.

    python benchmarks/linear_kernels.py [--threads 2] [--passes 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def weight_sets() -> dict[str, list[tuple[int, int]]]:
    """name -> [(out, in), ...]."""
    gpt2 = [(2304, 768), (768, 768), (3072, 768), (768, 3072)] * 12
    d, ff = 256, 1024
    translator = [(3 * d, d), (d, d), (d, d), (d, d), (ff, d), (d, ff)] * 3 + [(8000, d)]
    return {"GPT-2 small blocks": gpt2, "GPT-2 small output layer": [(50257, 768)], "Multi30k decoder step": translator}


def timed(fn, passes: int) -> float:
    fn()
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(shapes: list[tuple[int, int]], rows: int, passes: int) -> dict[str, float]:
    weights = [torch.randn(shape) for shape in shapes]
    column_major = [w.t().contiguous().t() for w in weights]
    x = {n: torch.randn(rows, n) for n in {w.shape[1] for w in weights}}
    out: dict[str, float] = {}
    with torch.inference_mode():
        out["F.linear (out, in)"] = timed(lambda: [F.linear(x[w.shape[1]], w) for w in weights], passes)
        out["F.linear column-major"] = timed(lambda: [F.linear(x[w.shape[1]], w) for w in column_major], passes)
        for hint in (1, 8, 64):
            packed = [(w.shape[1], torch.ops.mkldnn._reorder_linear_weight(w, hint)) for w in weights]
            out[f"packed for {hint}"] = timed(
                lambda packed=packed: [
                    torch.ops.mkldnn._linear_pointwise(x[n], p, None, "none", [], "") for n, p in packed
                ],
                passes,
            )
        if rows == 1:
            compiled = torch.compile(_row_products)
            out["compiled one-row reduction"] = timed(lambda: compiled(x, weights), passes)
    return out


def _row_products(x: dict[int, torch.Tensor], weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each weight (out, in) times its one-row input (1, in), as a multiply-and-sum (one graph)."""
    return [(x[w.shape[1]].unsqueeze(-2) * w).sum(-1) for w in weights]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; ms per pass (median of {args.passes})")
    for name, shapes in weight_sets().items():
        megabytes = sum(o * i for o, i in shapes) * 4 / 1e6
        print(f"\n{name} ({megabytes:.0f} MB)")
        rows_list = (1, 8, 64) if megabytes < 100 else (1, 8, 64, 512)
        results = {rows: measure(shapes, rows, args.passes) for rows in rows_list}
        kernels = list(results[1])
        print("| kernel | " + " | ".join(f"M = {r}" for r in rows_list) + " |")
        print("|---|" + "---:|" * len(rows_list))
        for kernel in kernels:
            cells = [f"{results[r][kernel]:.2f}" if kernel in results[r] else "–" for r in rows_list]
            print(f"| {kernel} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
