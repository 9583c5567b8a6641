"""The printed and saved report of a classification evaluation: metrics, per-class table, confusion figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from attnkit.metrics import classification_report, multilabel_report
from attnkit.tasks.rundir import write_metrics


def report(run_dir: Path, rows: dict[str, Tensor], classes: list[str], split: str, log: Any) -> dict[str, float]:
    from attnkit.viz.confusion import plot_confusion

    if rows["pred"].dim() == 2:  # multi-label: no confusion matrix; F1 per class instead
        report = multilabel_report(rows["pred"], rows["label"])
        metrics = {k: report[k] for k in ("micro_f1", "macro_f1", "accuracy")}
        write_metrics(run_dir, metrics)
        log(
            f"{split}: micro-F1 {metrics['micro_f1']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
            f"exact-match accuracy {metrics['accuracy']:.4f}  ({len(rows['label'])} examples)"
        )
    else:
        report = classification_report(rows["pred"], rows["label"], len(classes))
        metrics = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
        write_metrics(run_dir, metrics)
        plot_confusion(run_dir / "confusion.png", report["confusion"], classes, title=f"{split}: confusion")
        log(
            f"{split}: accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
            f"({len(rows['label'])} examples)"
        )
    width = max(len(c) for c in classes)
    log(f"  {'class':<{width}}  precision  recall      F1  support")
    for i, name in enumerate(classes):
        log(
            f"  {name:<{width}}  {report['precision'][i]:9.3f}  {report['recall'][i]:6.3f}  {report['f1'][i]:6.3f}"
            f"  {report['support'][i]:7d}"
        )
    return metrics
