"""Image classification (issue #6): a small ViT on MNIST and Fashion-MNIST, a small CNN beside it.

For each dataset, in one run: `attnkit train vision --config configs/vision/<name>.yaml` under the
preset's wall-clock budget (test accuracy of the last weights: no checkpoint is chosen on the test
set), then the usual small baseline, a two-convolution CNN of under 100k parameters trained with
Adam on the same normalised images, for a fixed number of epochs.

    ATTNKIT_DATA=../shared/data python benchmarks/vision.py [--only mnist] [--cnn-epochs 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.data.images import channel_stats, load_vision_dataset
from attnkit.data.transforms import normalize, to_float
from attnkit.engine import TrainConfig
from attnkit.engine.history import read_history
from attnkit.options import build, load_preset
from attnkit.tasks import vision
from benchmarks._common import machine, write_json, write_section

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"mnist": 99.5, "fashion_mnist": 93.0}
PUBLISHED = {"mnist": (99.5, 99.2), "fashion_mnist": (92.3, 92.5)}  # small ViT after 200 epochs; CNN < 100k


class SmallCNN(nn.Module):
    """conv 5x5 (32) - pool - conv 5x5 (64) - pool - dropout - linear: about 60k parameters on 28 x 28 inputs."""

    def __init__(self, channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.dropout = nn.Dropout(0.25)
        self.head = nn.Linear(64 * 3 * 3, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, 7, 7)
        x = F.max_pool2d(x, 2)  # (B, 64, 3, 3)
        return self.head(self.dropout(x.flatten(1)))


def train_cnn(name: str, epochs: int, seed: int) -> dict[str, float]:
    train, test = load_vision_dataset(name, split="train"), load_vision_dataset(name, split="test")
    mean, std = channel_stats(train.images)
    xs, xt = normalize(to_float(train.images), mean, std), normalize(to_float(test.images), mean, std)
    torch.manual_seed(seed)
    model = SmallCNN(train.images.shape[1], len(train.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * ((len(xs) + 127) // 128))
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(xs)).split(128):
            loss = F.cross_entropy(model(xs[index]), train.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i : i + 1000]).argmax(-1) for i in range(0, len(xt), 1000)])
    return {
        "accuracy": 100 * float((pred == test.labels).float().mean()),
        "train_seconds": seconds,
        "epochs": epochs,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def train_vit(name: str, out: Path) -> dict[str, float]:
    preset = load_preset(str(ROOT / "configs" / "vision" / f"{name}.yaml"))
    options = build(vision.VisionOptions, preset, {"dataset": name, "out": str(out)})
    config = build(TrainConfig, vision.TRAIN_DEFAULTS, preset, {"progress": False})
    shutil.rmtree(out, ignore_errors=True)
    metrics = vision.train(options, config, log=lambda m: print(f"  {m}", flush=True))
    history = read_history(out / "history.csv")
    first, last = history[0], history[-1]
    steps_per_epoch = first["step"] / first["epoch"]  # the first row ends epoch 1
    model = _model(out)
    return {
        "accuracy": 100 * metrics["accuracy"],
        "train_seconds": last["elapsed_s"],
        "epochs": last["step"] / steps_per_epoch,  # fractional when the time limit stops a run mid-epoch
        "parameters": sum(p.numel() for p in vision.ViT(vision.ViTConfig.from_dict(model)).parameters()),
        "stem": model.get("stem", "patch"),
    }


def _model(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["model"]


def render(results: dict[str, object]) -> str:
    m = results["machine"]
    lines = [
        "## Image classification: ViT on MNIST and Fashion-MNIST (issue #6)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}. Reproduce: `ATTNKIT_DATA=../shared/data"
        " python benchmarks/vision.py`. Presets `configs/vision/{mnist,fashion_mnist}.yaml`; all 60,000 training"
        " images, test accuracy of the last weights on the 10,000 test images; one run (seed 0) per model.",
        "",
        "| data | model | params | epochs | training time (2 CPU cores) | test accuracy | target |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["datasets"].items():
        vit, cnn = row["vit"], row["cnn"]
        lines.append(
            f"| {name} | attnkit ViT{' (conv stem)' if vit.get('stem') == 'conv' else ''} | {vit['parameters']:,} |"
            f" {vit['epochs']:.3g} |"
            f" {vit['train_seconds'] / 60:.1f} min | **{vit['accuracy']:.2f}%** | ≥ {TARGETS[name]}% |"
        )
        lines.append(
            f"| {name} | two-convolution CNN, same run | {cnn['parameters']:,} | {cnn['epochs']} |"
            f" {cnn['train_seconds'] / 60:.1f} min | {cnn['accuracy']:.2f}% | |"
        )
        vit_pub, cnn_pub = PUBLISHED[name]
        lines.append(f"| {name} | published: small ViT, 200 epochs / CNN < 100k | | | | {vit_pub}% / {cnn_pub}% | |")
    lines.append("")
    for name, row in results["datasets"].items():
        vit, cnn = row["vit"], row["cnn"]
        met = vit["accuracy"] >= TARGETS[name] and vit["accuracy"] > cnn["accuracy"] and vit["train_seconds"] <= 1800
        lines.append(
            f"{name}: ViT {vit['accuracy']:.2f}% in {vit['train_seconds'] / 60:.1f} min; target ≥ {TARGETS[name]}%"
            f" in ≤ 30 min and above the same run's CNN ({cnn['accuracy']:.2f}%): **{'met' if met else 'missed'}**."
        )
        lines.append("")
    return "\n".join(lines).rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(TARGETS), help="one dataset only")
    parser.add_argument("--cnn-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-vision")
    args = parser.parse_args()
    path = ROOT / "benchmarks" / "results" / "vision.json"
    earlier = json.loads(path.read_text())["datasets"] if path.exists() else {}
    results: dict[str, object] = {"machine": machine(), "datasets": earlier}
    for name in [args.only] if args.only else list(TARGETS):
        print(f"{name}: ViT", flush=True)
        vit = train_vit(name, ROOT / args.out / name)
        print(f"{name}: CNN", flush=True)
        cnn = train_cnn(name, args.cnn_epochs, args.seed)
        results["datasets"][name] = {"vit": vit, "cnn": cnn}
        write_json("vision", results)
    write_section("vision", render(results))
    print(render(results))


if __name__ == "__main__":
    main()
