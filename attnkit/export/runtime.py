"""A run computing through onnxruntime: `attnkit serve RUN_DIR --backend onnx`.

`use_onnx(run, folder)` makes a run compute through the graphs in `folder` (written by `attnkit
export onnx` for this run): for classify, mlm, recommend and vision its `forward(batch)` becomes a
call of model.onnx; for translate, greedy and beam search step through encoder.onnx and
decoder_step.onnx, and for lm, generation steps through decoder_step.onnx
(`attnkit.export.generation.OnnxStepper`, which slides the lm's window as the PyTorch stepper does).
Tokenizing, batching and turning outputs into records stay the run's own, so answers have the same
fields as with PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnkit.errors import UserError

FORWARD_TASKS = ("classify", "mlm", "recommend", "vision")
ONNX_TASKS = (*FORWARD_TASKS, "translate", "lm")


def read_export(folder: Path | str) -> dict[str, Any]:
    """export.json of an export folder; onnxruntime must be installed to use it."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("--backend onnx needs onnxruntime: pip install 'attnkit[onnx]'") from None
    try:
        return json.loads((Path(folder) / "export.json").read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{folder}: not an attnkit ONNX export ({error})") from None


class OnnxForward:
    """`run.forward(batch)` through onnxruntime: batch (the tensors `run.encode` makes) -> the graph's
    output on the run's device, refusing sequences longer than the export's `max_length`.

    Args:
        folder: an export of the run (model.onnx, export.json).
        task: the run's task, which the export must be of.
        device: where outputs go.
        threads: onnxruntime's intra-op threads (default: its own choice).
    """

    def __init__(self, folder: Path | str, task: str, device: torch.device, threads: int | None = None) -> None:
        described = read_export(folder)
        import onnxruntime

        folder = Path(folder)
        if described.get("task") != task:
            raise UserError(f"{folder} holds an export of a {described.get('task')} run, not of this {task} run")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i["name"] for i in described["inputs"]]
        self.sequences = [i["name"] for i in described["inputs"] if len(i["axes"]) > 1]
        self.max_length, self.device = int(described["max_length"]), device

    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        for name in self.sequences:
            if batch[name].size(1) > self.max_length:
                raise UserError(f"{name}: {batch[name].size(1)} positions exceed the graph's {self.max_length}")
        feeds = {name: batch[name].detach().cpu().numpy() for name in self.inputs}
        return torch.from_numpy(self.session.run(None, feeds)[0]).to(self.device)


def check_onnx_backend(run: Any) -> None:
    """Refuse a run `use_onnx` cannot serve: a task that generates, or a reduced precision."""
    if run.task not in ONNX_TASKS:
        raise UserError(f"--backend onnx serves {', '.join(ONNX_TASKS)} runs, not {run.task} runs")
    if getattr(run, "precision", "fp32") != "fp32":
        raise UserError("--backend onnx runs the exported float32 graph: leave out --precision")


def use_onnx(run: Any, folder: Path | str, threads: int | None = None) -> None:
    """Make `run` compute its forward pass through onnxruntime on the export in `folder`."""
    check_onnx_backend(run)
    if run.task in ("translate", "lm"):
        from attnkit.export.generation import OnnxGenerator, OnnxStepper

        described = read_export(folder)
        if described.get("task") != run.task or "generation" not in described:
            raise UserError(f"{folder} holds no {run.task} export with generation graphs")
        generator = OnnxGenerator(folder, threads)
        if run.task == "translate":
            run.stepper = lambda src: OnnxStepper(generator, src)
        else:
            context = run.model.config.max_len
            run.stepper = lambda: OnnxStepper(generator, max_len=context)
    else:
        run.forward = OnnxForward(folder, run.task, run.device, threads)
    run.backend = "onnx"
