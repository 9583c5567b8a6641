"""Training on the CPU: attnkit's dropout, attention, output-layer loss and optimizer against stock PyTorch.

Two kernels took about half of a bfloat16 Translator training step on this machine's 2 cores:
`F.dropout`'s masks (one Mersenne Twister draw per element) and PyTorch's CPU flash attention in
bfloat16 at short lengths. attnkit's `dropout` draws 16 bits per element instead, and
`scaled_dot_product_attention` writes bfloat16 attention out for up to `SHORT_KEYS` keys. In one run,
timed in alternating rounds:

1. dropout of a (2000, 1024) tensor, float32 and bfloat16: `attnkit.nn.dropout.dropout` against
   `F.dropout`;
2. attention forward + backward, bfloat16 and float32, ~4k query tokens of 4 heads of 64 at each
   length: attnkit's `scaled_dot_product_attention` against `F.scaled_dot_product_attention`;
3. one training step (forward, loss, backward, AdamW) of each preset's model, float32 and under
   bfloat16 autocast: attnkit as it is against attnkit with both stock kernels swapped back in;
4. the loss through a large output layer, forward + backward, bfloat16 autocast and float32:
   `attnkit.nn.linear_cross_entropy` against `F.cross_entropy` on the materialised logits;
5. one AdamW step on each preset model's parameters: the engine's optimizer (PyTorch's fused AdamW)
   against `torch.optim.AdamW` with its defaults (a loop over the parameters on the CPU).

Speed-up = stock time / attnkit time, the median of the per-round ratios (and their range).

    python benchmarks/cpu_train.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attnkit.nn.attention as attention_module
import attnkit.nn.dropout as dropout_module
from attnkit.engine.optim import build_optimizer, param_groups
from attnkit.nn import linear_cross_entropy, scaled_dot_product_attention
from benchmarks._common import machine, paired, write_json, write_section
from benchmarks.bf16 import MODELS, training_step

LENGTHS = (17, 32, 64, 128, 192, 200, 256, 512)
QUERY_TOKENS = 4096
HEADS, HEAD_DIM = 4, 64
# (rows, width, classes) of the output layers: a Multi30k Translator batch (~2k target tokens, 8k
# joint BPE) and an ML-1M SASRec batch (128 histories of 200 items, 3,706 items, width 50).
OUTPUT_LAYERS = {"Translator": (2000, 256, 8000), "SASRec": (25600, 50, 3706)}


@contextlib.contextmanager
def stock_kernels() -> Iterator[None]:
    """Inside: `F.dropout` for every attnkit dropout, PyTorch's fused attention at every length."""
    saved = dropout_module.dropout, attention_module.dropout, attention_module.SHORT_KEYS

    def torch_dropout(x: torch.Tensor, p: float, inplace: bool = False) -> torch.Tensor:
        return F.dropout(x, p, True, inplace)

    dropout_module.dropout = attention_module.dropout = torch_dropout
    attention_module.SHORT_KEYS = 0
    try:
        yield
    finally:
        dropout_module.dropout, attention_module.dropout, attention_module.SHORT_KEYS = saved


def compare(attnkit: Callable[[], None], stock: Callable[[], None], rounds: int) -> dict[str, float]:
    """Median times of both and the per-round speed-up of attnkit over stock."""
    return paired({"attnkit": attnkit, "stock": stock}, "stock", "attnkit", rounds, torch.device("cpu"))


def dropout_rows(rounds: int) -> dict[str, dict[str, float]]:
    rows = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2000, 1024, dtype=dtype)
        rows[str(dtype).removeprefix("torch.")] = compare(
            lambda x=x: dropout_module.dropout(x, 0.1), lambda x=x: F.dropout(x, 0.1, True), rounds * 4
        )
    return rows


def attention_rows(rounds: int) -> dict[str, dict[str, float]]:
    rows = {}
    for dtype in (torch.bfloat16, torch.float32):
        for length in LENGTHS:
            torch.manual_seed(0)
            batch = max(1, QUERY_TOKENS // length)
            q, k, v = (torch.randn(batch, HEADS, length, HEAD_DIM, dtype=dtype, requires_grad=True) for _ in range(3))
            keep = torch.ones(batch, 1, 1, length, dtype=torch.bool)
            keep[::2, ..., length - length // 4 :] = False  # padding in every other row
            grad = torch.randn_like(q)

            def attnkit(q=q, k=k, v=v, keep=keep, grad=grad) -> None:
                scaled_dot_product_attention(q, k, v, keep).backward(grad)

            def stock(q=q, k=k, v=v, keep=keep, grad=grad) -> None:
                F.scaled_dot_product_attention(q, k, v, attn_mask=keep).backward(grad)

            rows[f"{str(dtype).removeprefix('torch.')} {length}"] = compare(attnkit, stock, rounds)
    return rows


def step_rows(rounds: int) -> dict[str, dict[str, float]]:
    rows = {}
    for name, make in MODELS.items():
        for bf16 in (True, False):
            step = functools.partial(training_step(make), bf16)

            def stock(step=step) -> None:
                with stock_kernels():
                    step()

            key = f"{name}, {'bfloat16' if bf16 else 'float32'}"
            rows[key] = compare(step, stock, rounds)
            print(f"  {key}: {rows[key]['stock_ms']:.1f} -> {rows[key]['attnkit_ms']:.1f} ms", flush=True)
    return rows


def loss_rows(rounds: int) -> dict[str, dict[str, float]]:
    rows = {}
    for name, (n, d, v) in OUTPUT_LAYERS.items():
        torch.manual_seed(0)
        hidden = torch.randn(n, d, requires_grad=True)
        weight = (torch.randn(v, d) * d**-0.5).requires_grad_()
        target = torch.randint(0, v, (n,))
        for bf16 in (True, False):

            def attnkit(bf16=bf16, hidden=hidden, weight=weight, target=target) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = linear_cross_entropy(hidden, weight, target, label_smoothing=0.1)
                loss.backward()

            def stock(bf16=bf16, hidden=hidden, weight=weight, target=target) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = F.cross_entropy(hidden @ weight.T, target, label_smoothing=0.1)
                loss.backward()

            key = f"{name} ({n:,} x {d} x {v:,}), {'bfloat16' if bf16 else 'float32'}"
            rows[key] = compare(attnkit, stock, rounds)
    return rows


def optimizer_rows(rounds: int) -> dict[str, dict[str, float]]:
    rows = {}
    for name, make in MODELS.items():
        torch.manual_seed(0)
        model, _ = make()
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        ours = build_optimizer(model, 1e-4, 0.01)
        theirs = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4)
        size = sum(p.numel() for p in model.parameters())
        rows[f"{name}, {size / 1e6:.1f}M parameters"] = compare(ours.step, theirs.step, rounds * 4)
    return rows


def table(title: str, rows: dict[str, dict[str, float]]) -> list[str]:
    lines = [f"| {title} | stock | attnkit | speed-up | range |", "|---|---:|---:|---:|---|"]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['stock_ms']:.2f} ms | {row['attnkit_ms']:.2f} ms | {row['speedup']:.2f}× "
            f"| {row['speedup_min']:.2f}–{row['speedup_max']:.2f} |"
        )
    return lines


def render(results: dict[str, object]) -> str:
    where = results["machine"]
    return "\n".join(
        [
            "## Training on the CPU: attnkit's dropout, attention, output-layer loss and optimizer "
            "against stock PyTorch",
            "",
            f"Machine: {where['cpu']}, {where['torch_threads']} threads, torch {where['torch']}. "
            "Reproduce: `python benchmarks/cpu_train.py`. Stock = `F.dropout` and "
            "`F.scaled_dot_product_attention`; speed-up = stock time / attnkit time, the median of the "
            f"per-round ratios over {results['rounds']} alternating rounds (dropout: {4 * results['rounds']}), "
            "with their range.",
            "",
            "Dropout, p = 0.1, a (2000, 1024) tensor:",
            "",
            *table("dtype", results["dropout"]),
            "",
            f"Attention forward + backward, {HEADS} heads of {HEAD_DIM}, about {QUERY_TOKENS:,} query tokens "
            "a batch, a padding mask (attnkit writes bfloat16 out up to "
            f"{attention_module.SHORT_KEYS} keys and takes the fused kernel otherwise):",
            "",
            *table("dtype, keys", results["attention"]),
            "",
            "One training step (forward, loss, backward, AdamW) of each preset's model, the batches of "
            "`benchmarks/bf16.py`; stock = the same model with both stock kernels swapped back in:",
            "",
            *table("model, precision", results["steps"]),
            "",
            "The loss through the output layer, forward + backward, label smoothing 0.1; stock = "
            "`F.cross_entropy(h @ W.T)` (the logits materialised); attnkit = `linear_cross_entropy` "
            "(chunks of about 16 MiB of logits, the gradients computed in the forward pass):",
            "",
            *table("output layer (rows x width x classes), precision", results["loss"]),
            "",
            "One AdamW step over each preset model's parameters (gradients set); stock = "
            "`torch.optim.AdamW` with its defaults, attnkit = the engine's `build_optimizer` "
            f"(PyTorch's fused AdamW); {4 * results['rounds']} rounds:",
            "",
            *table("model", results["optimizer"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="timing rounds (attnkit and stock alternating)")
    args = parser.parse_args()
    results: dict[str, object] = {"machine": machine(), "rounds": args.rounds}
    for name, rows in SECTIONS.items():
        print(name, flush=True)
        results[name] = rows(args.rounds)
    write_json("cpu_train", results)
    write_section("cpu_train", render(results))


SECTIONS: dict[str, Callable[[int], dict[str, dict[str, float]]]] = {
    "dropout": dropout_rows,
    "attention": attention_rows,
    "steps": step_rows,
    "loss": loss_rows,
    "optimizer": optimizer_rows,
}


if __name__ == "__main__":
    main()
