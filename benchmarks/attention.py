"""Attention speed and memory: attnkit's fused and reference paths against PyTorch (issue #2).

In one run, for B=4, H=8, D=64 and each length L, causal and not, forward and forward+backward:
attnkit's fused path, attnkit's reference path, `torch.nn.functional.scaled_dot_product_attention`,
attnkit's `MultiHeadAttention` and `torch.nn.MultiheadAttention` called with its defaults
(d_model 512). Variants are timed in alternating rounds; we report medians, quartiles, extra
peak memory and GFLOP/s against a measured fp32 matmul ceiling. A last table measures attention
dropout in training: PyTorch's CPU kernel against attnkit's chunked path.

    python benchmarks/attention.py                # the full run, writes BENCHMARKS.md
    python benchmarks/attention.py --quick        # small lengths only, to try the script
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.nn import MultiHeadAttention, scaled_dot_product_attention
from attnkit.nn.attention import chunked_attention
from attnkit.profiling import peak_memory, use_mmap_for_large_allocations
from benchmarks._common import (
    alternate,
    machine,
    matmul_ceiling,
    summarise,
    time_once,
    write_json,
    write_section,
)

B, H, D = 4, 8, 64
E = H * D
LENGTHS = [128, 512, 1024, 2048, 4096, 8192]
DROPOUT = 0.1
# Bytes per (B, H, L, L) float32 matrix that the weight-materialising variants hold at their peak.
MATERIALISED_FACTOR = {"forward": 3, "forward+backward": 5}


def total_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def attention_flops(length: int, causal: bool, backward: bool) -> float:
    """FlashAttention's convention: 4·B·H·L²·D forward, halved when causal; backward 2.5× forward."""
    flops = 4 * B * H * length * length * D * (0.5 if causal else 1.0)
    return flops * 3.5 if backward else flops


def projection_flops(length: int, backward: bool) -> float:
    flops = 4 * 2 * B * length * E * E  # q, k, v and output projections
    return flops * 3 if backward else flops


def make_runner(forward: Callable[[], torch.Tensor], inputs: list[torch.Tensor], backward: bool) -> Callable[[], None]:
    """One call = forward (no graph) or forward + backward of sum(out)."""

    def run() -> None:
        if backward:
            for t in inputs:
                t.grad = None
            forward().sum().backward()
        else:
            with torch.no_grad():
                forward()

    return run


def attention_variants(
    length: int, causal: bool, backward: bool, device: torch.device
) -> dict[str, Callable[[], None]]:
    q, k, v = (torch.randn(B, H, length, D, device=device, requires_grad=backward) for _ in range(3))
    qkv = [q, k, v]
    return {
        "attnkit fused": make_runner(lambda: scaled_dot_product_attention(q, k, v, causal=causal), qkv, backward),
        "torch sdpa": make_runner(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), qkv, backward),
        "attnkit reference": make_runner(
            lambda: scaled_dot_product_attention(q, k, v, causal=causal, return_weights=True)[0],
            qkv,
            backward,
        ),
    }


def module_variants(length: int, causal: bool, backward: bool, device: torch.device) -> dict[str, Callable[[], None]]:
    ours = MultiHeadAttention(E, H).to(device)
    theirs = nn.MultiheadAttention(E, H).to(device)  # defaults: batch_first=False, need_weights=True
    x = torch.randn(B, length, E, device=device, requires_grad=backward)
    x_seq_first = torch.randn(length, B, E, device=device, requires_grad=backward)
    # As the tutorials do: a float mask with -inf above the diagonal.
    square_mask = nn.Transformer.generate_square_subsequent_mask(length, device=device) if causal else None
    return {
        "attnkit MultiHeadAttention": make_runner(lambda: ours(x, causal=causal), [x, *ours.parameters()], backward),
        "torch nn.MultiheadAttention": make_runner(
            lambda: theirs(x_seq_first, x_seq_first, x_seq_first, attn_mask=square_mask)[0],
            [x_seq_first, *theirs.parameters()],
            backward,
        ),
    }


def dropout_variants(length: int, device: torch.device) -> dict[str, Callable[[], None]]:
    q, k, v = (torch.randn(B, H, length, D, device=device, requires_grad=True) for _ in range(3))
    qkv = [q, k, v]
    return {
        "torch sdpa, no dropout": make_runner(lambda: F.scaled_dot_product_attention(q, k, v), qkv, True),
        f"torch sdpa, dropout {DROPOUT}": make_runner(
            lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=DROPOUT), qkv, True
        ),
        f"attnkit chunked, dropout {DROPOUT}": make_runner(
            lambda: chunked_attention(q, k, v, dropout_p=DROPOUT), qkv, True
        ),
    }


MATERIALISING = {"attnkit reference", "torch nn.MultiheadAttention", f"torch sdpa, dropout {DROPOUT}"}


def measure(
    variants: dict[str, Callable[[], None]],
    pairs: list[list[str]],
    length: int,
    mode: str,
    device: torch.device,
    budget_s: float,
    max_rounds: int,
) -> dict[str, dict[str, object]]:
    """Skip what would not fit, measure peak memory on a first call each, then time in rounds.

    The variants of each group in `pairs` (those whose ratio is a target) alternate with one another
    for at least 9 rounds; the others alternate among themselves for at least 3.
    """
    limit = 0.6 * total_memory_bytes() if device.type == "cpu" else torch.cuda.mem_get_info(device)[1] * 0.8
    results: dict[str, dict[str, object]] = {}
    runnable: dict[str, Callable[[], None]] = {}
    for name, run in variants.items():
        need = MATERIALISED_FACTOR[mode] * B * H * length * length * 4
        if name in MATERIALISING and need > limit:
            results[name] = {"skipped": f"needs about {need / 2**30:.0f} GiB (limit {limit / 2**30:.0f} GiB)"}
            continue
        run()  # warm-up
        gc.collect()
        with peak_memory(device) as peak:
            first = time_once(run, device)
        results[name] = {"extra_mib": peak.mib, "first_s": first}
        runnable[name] = run
    grouped = [[n for n in group if n in runnable] for group in pairs]
    rest = [n for n in runnable if not any(n in group for group in grouped)]
    for group, min_rounds in [*((g, 9) for g in grouped), (rest, 3)]:
        if not group:
            continue
        per_round = sum(results[name]["first_s"] for name in group)
        rounds = max(min_rounds, min(max_rounds, int(budget_s / max(per_round, 1e-6))))
        timed = alternate({name: runnable[name] for name in group}, rounds, device)
        for name, samples in timed.items():
            results[name].update(summarise(samples))
    return results


PAIRS = {
    "attention": [["attnkit fused", "torch sdpa"]],
    "module": [["attnkit MultiHeadAttention", "torch nn.MultiheadAttention"]],
    "dropout": [[f"torch sdpa, dropout {DROPOUT}", f"attnkit chunked, dropout {DROPOUT}"]],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS, help="sequence lengths L")
    parser.add_argument("--quick", action="store_true", help="lengths 128 and 512 only; writes nothing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds of timing per configuration")
    parser.add_argument("--max-rounds", type=int, default=30)
    parser.add_argument(
        "--recheck",
        type=int,
        metavar="ROUNDS",
        help="only re-time attnkit fused vs. torch sdpa at --lengths for ROUNDS alternating rounds; writes nothing",
    )
    args = parser.parse_args()
    if args.recheck:
        recheck(args.lengths, args.recheck, torch.device(args.device))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [128, 512] if args.quick else args.lengths
    device = torch.device(args.device)
    use_mmap_for_large_allocations()
    torch.manual_seed(0)

    info = machine()
    ceiling = matmul_ceiling(device)
    print(f"{info['cpu']} | {info['torch_threads']} threads | fp32 matmul ceiling {ceiling:.1f} GFLOP/s")
    rows: list[dict[str, object]] = []
    for mode in ("forward", "forward+backward"):
        backward = mode == "forward+backward"
        for causal in (False, True):
            for length in lengths:
                for family, build in (("attention", attention_variants), ("module", module_variants)):
                    measured = measure(
                        build(length, causal, backward, device),
                        PAIRS[family],
                        length,
                        mode,
                        device,
                        args.budget,
                        args.max_rounds,
                    )
                    for name, result in measured.items():
                        flops = attention_flops(length, causal, backward)
                        if family == "module":
                            flops += projection_flops(length, backward)
                        if "median_ms" in result:
                            result["gflops"] = flops / (result["median_ms"] / 1000) / 1e9
                            result["pct_of_ceiling"] = 100 * result["gflops"] / ceiling
                        row = {"table": family, "mode": mode, "causal": causal, "L": length, "variant": name}
                        rows.append({**row, **result})
                        print(_line(rows[-1]), flush=True)
                    gc.collect()
    for length in lengths:
        variants = dropout_variants(length, device)
        measured = measure(variants, PAIRS["dropout"], length, "forward+backward", device, args.budget, args.max_rounds)
        for name, result in measured.items():
            rows.append(
                {
                    "table": "dropout",
                    "mode": "forward+backward",
                    "causal": False,
                    "L": length,
                    "variant": name,
                    **result,
                }
            )
            print(_line(rows[-1]), flush=True)
        gc.collect()
    if args.quick:
        return
    payload = {"machine": info, "matmul_ceiling_gflops": ceiling, "B": B, "H": H, "D": D, "rows": rows}
    path = write_json("attention", payload)
    write_section("attention", render(payload))
    print(f"wrote {path} and BENCHMARKS.md")


def recheck(lengths: list[int], rounds: int, device: torch.device) -> None:
    """The fused-vs-kernel ratio alone, with more rounds: both call the same kernel, so a ratio far
    from 1 in the full run is noise worth measuring again."""
    use_mmap_for_large_allocations()
    for mode in ("forward", "forward+backward"):
        for causal in (False, True):
            for length in lengths:
                variants = attention_variants(length, causal, mode == "forward+backward", device)
                pair = {name: variants[name] for name in ("attnkit fused", "torch sdpa")}
                for run in pair.values():
                    run()
                times = alternate(pair, rounds, device)
                fused, kernel = (summarise(times[n]) for n in pair)
                ratio = fused["median_ms"] / kernel["median_ms"]
                print(
                    f"{mode:<16} causal={causal!s:<5} L={length:<5} fused {fused['median_ms']:.1f} ms "
                    f"[{fused['q1_ms']:.1f}-{fused['q3_ms']:.1f}]  torch {kernel['median_ms']:.1f} ms "
                    f"[{kernel['q1_ms']:.1f}-{kernel['q3_ms']:.1f}]  ratio {ratio:.3f}",
                    flush=True,
                )


def _line(row: dict[str, object]) -> str:
    head = f"{row['table']:<9} {row['mode']:<16} causal={row['causal']!s:<5} L={row['L']:<5}"
    head += f" {row['variant']:<32}"
    if "skipped" in row:
        return f"{head} skipped: {row['skipped']}"
    return (
        f"{head} {row['median_ms']:10.2f} ms  [{row['q1_ms']:.2f}, {row['q3_ms']:.2f}]  n={row['n']:<3}"
        f" +{row['extra_mib']:.1f} MiB"
    )


def render(payload: dict[str, object]) -> str:
    """The BENCHMARKS.md section."""
    rows = payload["rows"]
    info = payload["machine"]

    def find(table: str, mode: str, causal: bool, length: int, variant: str) -> dict[str, object]:
        for row in rows:
            if (row["table"], row["mode"], row["causal"], row["L"], row["variant"]) == (
                table,
                mode,
                causal,
                length,
                variant,
            ):
                return row
        return {"skipped": "not run"}

    def ms(row: dict[str, object]) -> str:
        if "median_ms" not in row:
            return "skipped"
        return f"{row['median_ms']:.1f} [{row['q1_ms']:.1f}–{row['q3_ms']:.1f}]"

    def mib(row: dict[str, object]) -> str:
        return "–" if row.get("extra_mib") is None else f"{row['extra_mib']:.0f}"

    def ratio(a: dict[str, object], b: dict[str, object]) -> str:
        if "median_ms" not in a or "median_ms" not in b:
            return "–"
        return f"{a['median_ms'] / b['median_ms']:.3f}"

    lengths = sorted({row["L"] for row in rows})
    out = [
        "## Attention kernels (issue #2)",
        "",
        f"`python benchmarks/attention.py` on {info['cpu']}, {info['torch_threads']} torch threads, "
        f"torch {info['torch']}, {info['date']}. B={payload['B']}, H={payload['H']}, D={payload['D']}, "
        f"float32. Times are medians [quartiles] in ms over alternating rounds; memory is the extra "
        f"peak resident memory of one call (MiB). fp32 matmul ceiling measured in the same run: "
        f"{payload['matmul_ceiling_gflops']:.0f} GFLOP/s.",
        "",
        "### attnkit fused path vs. PyTorch's kernel (target: ratio ≤ 1.05 at every L; memory linear in L)",
        "",
        "| mode | causal | L | attnkit fused ms | torch sdpa ms | fused / torch | fused MiB | fused GFLOP/s "
        "(% ceiling) | reference ms | reference MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("forward", "forward+backward"):
        for causal in (False, True):
            for length in lengths:
                fused = find("attention", mode, causal, length, "attnkit fused")
                torch_row = find("attention", mode, causal, length, "torch sdpa")
                reference = find("attention", mode, causal, length, "attnkit reference")
                gflops = f"{fused['gflops']:.0f} ({fused['pct_of_ceiling']:.0f}%)" if "gflops" in fused else "–"
                cells = [mode, causal, length, ms(fused), ms(torch_row), ratio(fused, torch_row)]
                cells += [mib(fused), gflops, ms(reference), mib(reference)]
                out.append("| " + " | ".join(str(c) for c in cells) + " |")
    out += [
        "",
        "### attnkit `MultiHeadAttention` vs. `torch.nn.MultiheadAttention` with its defaults "
        "(target: ≥ 1.5× faster forward+backward)",
        "",
        "d_model 512, 8 heads; PyTorch's module is called as users call it: `mha(x, x, x)` "
        "(`need_weights=True`, which computes the weights and so skips the fused kernel), with "
        "`generate_square_subsequent_mask` when causal.",
        "",
        "| mode | causal | L | attnkit ms | torch ms | speed-up | attnkit MiB | torch MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("forward", "forward+backward"):
        for causal in (False, True):
            for length in lengths:
                ours = find("module", mode, causal, length, "attnkit MultiHeadAttention")
                theirs = find("module", mode, causal, length, "torch nn.MultiheadAttention")
                out.append(
                    f"| {mode} | {causal} | {length} | {ms(ours)} | {ms(theirs)} | {ratio(theirs, ours)}× "
                    f"| {mib(ours)} | {mib(theirs)} |"
                )
    out += [
        "",
        f"### Attention dropout in training (p = {DROPOUT}, forward+backward, not causal)",
        "",
        "PyTorch's CPU kernel has no dropout of its own: with `dropout_p > 0` it falls back to a path "
        "that materialises the L×L weights. attnkit's `chunked_attention` computes 256 queries at a "
        "time and keeps only q, k, v and the output; its hand-written backward pass recomputes each "
        "block's weights and regenerates its dropout mask from a seed.",
        "",
        "| L | torch, no dropout ms | torch, dropout ms | attnkit chunked, dropout ms "
        "| chunked / torch dropout | torch no-dropout MiB | torch dropout MiB | chunked MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for length in lengths:
        plain = find("dropout", "forward+backward", False, length, "torch sdpa, no dropout")
        torch_drop = find("dropout", "forward+backward", False, length, f"torch sdpa, dropout {DROPOUT}")
        chunked = find("dropout", "forward+backward", False, length, f"attnkit chunked, dropout {DROPOUT}")
        out.append(
            f"| {length} | {ms(plain)} | {ms(torch_drop)} | {ms(chunked)} | {ratio(chunked, torch_drop)} "
            f"| {mib(plain)} | {mib(torch_drop)} | {mib(chunked)} |"
        )
    skipped = sorted({f"{row['variant']} at L={row['L']} ({row['mode']})" for row in rows if "skipped" in row})
    if skipped:
        out += ["", "Skipped because it would not fit in memory: " + "; ".join(skipped) + "."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
