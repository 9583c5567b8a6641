"""The run's history: one CSV row per evaluation, and a picture of the curves."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from attnkit.atomic import atomic_path


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """Write all rows to `path` (CSV, columns in first-seen order), atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def read_history(path: Path) -> list[dict[str, float]]:
    """Rows written by `write_history` (empty when there is no file)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: _number(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


def plot_curves(path: Path, rows: list[dict[str, float]]) -> None:
    """Training loss and every validation figure against the optimizer step, one panel each."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    not_curves = {"step", "epoch", "lr", "elapsed_s", "tokens_per_s"}
    keys = list(dict.fromkeys(k for row in rows for k in row if k not in not_curves))
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        points = [(row["step"], row[key]) for row in rows if key in row]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
