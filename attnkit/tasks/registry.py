"""The tasks attnkit knows, by name. Each task module declares its own `TASK`; this lists them."""

from __future__ import annotations

import importlib

from attnkit.errors import UserError
from attnkit.tasks.base import TaskSpec

MODULES = {
    "classify": "attnkit.tasks.classify",
    "mlm": "attnkit.tasks.mlm",
    "recommend": "attnkit.tasks.recommend",
    "translate": "attnkit.tasks.translate",
    "lm": "attnkit.tasks.lm",
    "vision": "attnkit.tasks.vision",
}


def all_tasks() -> dict[str, TaskSpec]:
    """Every task's spec, in the order `attnkit train --help` lists them."""
    return {name: importlib.import_module(module).TASK for name, module in MODULES.items()}


def get_task(name: str) -> TaskSpec:
    """The spec of task `name`; an unknown name is a `UserError`."""
    if name not in MODULES:
        raise UserError(f"unknown task {name!r} (known: {', '.join(MODULES)})")
    return importlib.import_module(MODULES[name]).TASK
