"""Attention pictures with matplotlib: heads side by side, a saliency strip over tokens, an image overlay."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import torch
from torch import Tensor

from attnkit.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heads(
    path: Path,
    weights: Tensor,
    rows: list[str],
    cols: list[str],
    title: str,
    labelled_up_to: int,
    panels: list[str] | None = None,
) -> Path:
    """One panel per head of weights (H, T, S): queries down, keys across, darker = more weight, from 0
    (white) to the largest weight of the figure.

    Axes longer than `labelled_up_to` tokens are drawn without labels, and the title says so.
    `panels` names the panels (default "head 0", "head 1", ...)."""
    plt = _pyplot()
    count = weights.size(0)
    across = min(count, 4)
    down = math.ceil(count / across)
    side = max(2.5, min(0.18 * max(len(rows), len(cols)) + 1.5, 9.0))
    fig, axes = plt.subplots(down, across, figsize=(side * across, side * down), squeeze=False)
    labelled = len(rows) <= labelled_up_to and len(cols) <= labelled_up_to
    top = max(float(weights.max()), 1e-6)  # the darkest blue: the largest weight shown, said in the title
    for index, axis in enumerate(axes.flat):
        if index >= count:
            axis.axis("off")
            continue
        axis.imshow(weights[index].float().cpu().numpy(), cmap="Blues", vmin=0, vmax=top, aspect="auto")
        axis.set_title(panels[index] if panels else f"head {index}", fontsize=9)
        if labelled:
            axis.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
            axis.set_yticks(range(len(rows)), rows, fontsize=7)
        else:
            axis.set_xticks([])
            axis.set_yticks([])
    note = f" (darkest: {top:.2f})" + ("" if labelled else f" ({len(rows)} x {len(cols)} tokens: labels left out)")
    fig.suptitle(textwrap.fill(title + note, width=max(40, int(14 * side * across / 2.5))), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def strip(path: Path, tokens: list[str], values: list[float], method: str | None) -> Path:
    """The saliency of each token as a coloured strip under the tokens (scaled from smallest to largest)."""
    plt = _pyplot()
    scaled = torch.tensor(values, dtype=torch.float32)
    scaled = (scaled - scaled.min()) / (scaled.max() - scaled.min()).clamp_min(1e-12)
    fig, axis = plt.subplots(figsize=(max(4.0, 0.35 * len(tokens) + 1), 1.6))
    axis.imshow(scaled[None].numpy(), cmap="Reds", vmin=0, vmax=1, aspect="auto")
    axis.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
    axis.set_yticks([])
    axis.set_title(method or "saliency", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def overlay(path: Path, image: Tensor, values: list[float], grid: tuple[int, int]) -> Path:
    """The saliency of each patch (row-major over `grid`) laid over the image (C, H, W) in [0, 1]."""
    plt = _pyplot()
    heat = torch.tensor(values, dtype=torch.float32).view(*grid)
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
    picture = image.permute(1, 2, 0).squeeze(-1).numpy()
    fig, axis = plt.subplots(figsize=(4, 4))
    axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    shown = axis.imshow(
        heat.numpy(), cmap="jet", alpha=0.45, extent=(0, picture.shape[1], picture.shape[0], 0), interpolation="nearest"
    )
    fig.colorbar(shown, ax=axis, fraction=0.046)
    axis.set_axis_off()
    axis.set_title("saliency per patch", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
