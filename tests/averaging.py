"""A check shared by the tasks' `--average-last` tests."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def assert_average_or_best(run: Path, last: int, out: str) -> None:
    """`last` checkpoints are kept, and model.safetensors is their average exactly when the log
    `out` says the average was kept; otherwise the log says the best checkpoint stayed."""
    files = [load_file(str(p)) for p in sorted((run / "checkpoints").glob("step-*.safetensors"))]
    assert len(files) == last
    average = {k: sum(f[k].double() for f in files) / last for k in files[0]}
    final = load_file(str(run / "model.safetensors"))
    same = all(torch.allclose(final[k].double(), average[k], atol=1e-6) for k in final)
    if f"model.safetensors: the average of the last {last} checkpoints" in out:
        assert same
    else:
        assert f"kept the best checkpoint: the average of the last {last} scores" in out and not same
