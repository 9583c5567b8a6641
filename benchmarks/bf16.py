"""What `--bf16` (bfloat16 autocast) does to a training step of each task's model on this machine.

For each model, at the size its preset trains, one optimizer step (forward, loss, backward, AdamW)
in float32 and under `torch.autocast(dtype=torch.bfloat16)`, timed in alternating rounds on the
same batch. Whether autocast pays depends on the processor: with native bfloat16 instructions
(AVX512-BF16, AMX) the matrix products run faster, without them they may run slower, and some
models are too narrow for the faster products to pay for the casts. The ratio is float32 time /
bfloat16 time.

    python benchmarks/bf16.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.models.gpt import GPT
from attnkit.models.sasrec import SASRec
from attnkit.models.translator import Translator
from attnkit.models.vit import ViT
from attnkit.options import build, load_preset
from attnkit.tasks import lm, recommend, translate, vision
from benchmarks._common import machine, paired, write_json, write_section

ROOT = Path(__file__).resolve().parent.parent
Loss = Callable[[], Tensor]


def preset_options(options: type, preset: str, given: dict[str, object]) -> object:
    """The task options a preset under configs/ builds (`given` fills what the command line would)."""
    return build(options, load_preset(str(ROOT / "configs" / preset)), given)


def translator() -> tuple[nn.Module, Loss]:
    """configs/translate/multi30k.yaml's model; 160 pairs of 16 / 17 tokens (~2.7k tokens)."""
    options = preset_options(translate.TranslateOptions, "translate/multi30k.yaml", {"dataset": "multi30k"})
    model = Translator(options.model_config(8000), bos_id=1, eos_id=2)
    src, tgt = torch.randint(4, 8000, (160, 16)), torch.randint(4, 8000, (160, 17))
    return model, lambda: F.cross_entropy(model(src, tgt[:, :-1]).float().flatten(0, 1), tgt[:, 1:].flatten())


def gpt() -> tuple[nn.Module, Loss]:
    """configs/lm/shakespeare_char.yaml's model (nanoGPT's CPU recipe); a batch of 12 windows of 64."""
    model = GPT(preset_options(lm.LmOptions, "lm/shakespeare_char.yaml", {"text": "-"}).model_config(65))
    ids = torch.randint(0, 65, (12, 65))
    return model, lambda: F.cross_entropy(model(ids[:, :-1]).float().flatten(0, 1), ids[:, 1:].flatten())


def sasrec() -> tuple[nn.Module, Loss]:
    """configs/recommend/ml1m.yaml's model; 128 histories of 200 items, softmax CE over all items."""
    options = preset_options(recommend.RecommendOptions, "recommend/ml1m.yaml", {"data": "-"})
    model = SASRec(options.model_config(3416))
    history, target = torch.randint(1, 3417, (128, 200)), torch.randint(1, 3417, (128, 200))

    def loss() -> Tensor:
        logits = model(history) @ model.item_embed.weight[1:].T  # (B, L, V)
        return F.cross_entropy(logits.float().flatten(0, 1), (target - 1).flatten())

    return model, loss


def vit(stem: str | None = None) -> tuple[nn.Module, Loss]:
    """configs/vision/mnist.yaml's model (or with another stem); a batch of 128 images 28 x 28."""
    given = {"dataset": "mnist", **({"stem": stem} if stem else {})}
    model = ViT(preset_options(vision.VisionOptions, "vision/mnist.yaml", given).model_config(28, 1, 10))
    images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    return model, lambda: F.cross_entropy(model(images).float(), labels)


MODELS = {
    "Translator (Multi30k preset)": translator,
    "GPT (shakespeare_char preset)": gpt,
    "SASRec (ML-1M preset, CE)": sasrec,
    "ViT (MNIST preset, convolution stem)": vit,
    "ViT (MNIST preset with the linear patch stem)": lambda: vit("patch"),
}


def training_step(make: Callable[[], tuple[nn.Module, Loss]]) -> Callable[[bool], None]:
    """One optimizer step (forward, loss, backward, AdamW) of a fresh model, with or without autocast."""
    torch.manual_seed(0)
    model, loss_fn = make()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(make: Callable[[], tuple[nn.Module, Loss]], rounds: int) -> dict[str, float]:
    """Step times in float32 and bfloat16 autocast, and the median of the per-round ratios."""
    step = training_step(make)
    runs = {"float32": lambda: step(False), "bfloat16": lambda: step(True)}
    return paired(runs, "float32", "bfloat16", rounds, torch.device("cpu"))


def render(results: dict[str, object]) -> str:
    where = results["machine"]
    lines = [
        "## bfloat16 autocast on the CPU (`--bf16`)",
        "",
        f"Machine: {where['cpu']}, {where['torch_threads']} threads, torch {where['torch']}. "
        "Reproduce: `python benchmarks/bf16.py`. One training step (forward, loss, backward, AdamW) of each "
        "model at its preset's size, in float32 and under bfloat16 autocast, alternating, "
        f"{results['rounds']} rounds; speed-up = float32 time / bfloat16 time, median of the per-round "
        "ratios (and their range):",
        "",
        "| model | float32 step | bfloat16 step | speed-up | range |",
        "|---|---:|---:|---:|---|",
    ]
    for name, row in results["models"].items():
        lines.append(
            f"| {name} | {row['float32_ms']:.1f} ms | {row['bfloat16_ms']:.1f} ms | {row['speedup']:.2f}× "
            f"| {row['speedup_min']:.2f}–{row['speedup_max']:.2f} |"
        )
    lines += [
        "",
        "The larger the matrix products, the more bfloat16 gains. PyTorch's CPU flash attention is slow in "
        "bfloat16 at short lengths, so attnkit writes attention out there (`make bench-cpu-train`); "
        "without that the ViT was 2× slower in bfloat16. SASRec attends over 200 items, where the "
        "fused kernel is kept, and its ratio swings around 1 between runs. Measure on your own processor "
        "before turning `--bf16` on.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="timing rounds (float32 and bfloat16 alternating)")
    args = parser.parse_args()
    results: dict[str, object] = {"machine": machine(), "rounds": args.rounds, "models": {}}
    for name, make in MODELS.items():
        row = measure(make, args.rounds)
        results["models"][name] = row
        print(f"{name}: {row['float32_ms']:.1f} ms -> {row['bfloat16_ms']:.1f} ms, {row['speedup']:.2f}×", flush=True)
    write_json("bf16", results)
    write_section("bf16", render(results))


if __name__ == "__main__":
    main()
