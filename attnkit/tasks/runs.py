"""A run directory: config.json, weights, tokenizer and metrics, as the engine and tasks write them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attnkit.engine.checkpoint import write_json_atomic
from attnkit.errors import UserError


def open_run(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Check that `run_dir` is a finished or resumable run and return its config.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{run_dir}: not a run directory (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{config_path}: unreadable ({error})") from None
    if not isinstance(config, dict) or "task" not in config:
        raise UserError(f"{config_path}: not an attnkit run configuration")
    return run_dir, config


def prepare_new_run(run_dir: str | Path) -> Path:
    """Create `run_dir` for a new run; refuse one that already holds a run."""
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_metrics(run_dir: Path, metrics: dict[str, float]) -> None:
    """metrics.json: one flat object of metric name to number."""
    write_json_atomic(run_dir / "metrics.json", {k: float(v) for k, v in metrics.items()})


def quiet(_message: str) -> None:
    """The log of processes other than rank 0: they print nothing."""
