"""A confusion-matrix picture (rows: true class, columns: predicted), normalised per row."""

from __future__ import annotations

from pathlib import Path

from attnkit.atomic import atomic_path


def plot_confusion(path: Path, confusion: list[list[int]], names: list[str], title: str = "") -> None:
    """Save the row-normalised matrix with counts written in each non-empty cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(names) + 2)
    fig, axis = plt.subplots(figsize=(size, size))
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=7 if len(names) > 20 else 9)
    axis.set_yticks(range(len(names)), names, fontsize=7 if len(names) > 20 else 9)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                if counts[i, j]:
                    color = "white" if shares[i, j] > 0.5 else "black"
                    axis.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8, color=color)
    axis.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
