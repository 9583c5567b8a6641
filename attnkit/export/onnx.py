"""`attnkit export onnx RUN_DIR --out DIR`: a run's forward pass as an ONNX graph for onnxruntime.

The graph is the run's `forward(batch)` (what `explain` and the tests call the model through): class
logits for classify and vision, token logits for mlm and lm, next-item scores for recommend,
teacher-forced next-token logits for translate. Batch size and sequence lengths are dynamic, the
lengths bounded by the model's positions (`export.json` names the bound; a caller must not pass
longer inputs). Exported with PyTorch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`,
which needs `onnxscript`), then run in onnxruntime on two batches of other shapes, with a padded
row, and compared with PyTorch: above `TOLERANCE` the export fails and nothing is kept.

DIR holds `model.onnx`, `export.json` (task, inputs with their dtypes and dynamic axes, output,
length bound, the run's classes and input normalisation, the measured difference) and the run's
tokenizer files. For translate and lm runs also the generation graphs (`attnkit.export.generation`):
an encoder graph and a decoder-step graph whose past keys and values are explicit inputs and outputs,
checked by greedy decoding in onnxruntime against attnkit's own.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.atomic import atomic_path
from attnkit.errors import UserError

TOLERANCE = 1e-4  # largest difference allowed between onnxruntime's outputs and PyTorch's
TOKENIZER_FILES = ("tokenizer.json", "source.spm", "target.spm", "vocab.json")


class RunForward(nn.Module):
    """`run.forward` over positional tensors, in the order of `names` (what the exporter traces)."""

    def __init__(self, run: Any, names: list[str]) -> None:
        super().__init__()
        self.run, self.names = run, names
        self.model = run.model  # registered, so the exporter sees the parameters

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.run.forward(dict(zip(self.names, tensors, strict=True)))


def export_onnx(run: Any, out: Path | str, *, opset: int | None = None, log: Any = print) -> dict[str, Any]:
    """Export `run`'s forward pass to `out`/model.onnx, check it in onnxruntime, write export.json;
    returns export.json's content."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(
            "attnkit export onnx needs onnx, onnxscript and onnxruntime: pip install 'attnkit[onnx]'"
        ) from None
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: exists and is not empty; choose a new folder")
    run.model.eval().to("cpu")
    run.device = torch.device("cpu")
    spec = run.export_spec()
    example = run.example_batch(2, spec["length"] // 2 or 1)
    names = list(example)
    dims = {"batch": torch.export.Dim("batch", min=1, max=4096)}
    shapes = []
    for name in names:
        axes = {0: dims["batch"]}
        axis = spec["axes"].get(name)
        if axis:
            dims.setdefault(axis, torch.export.Dim(axis, min=1, max=spec["length"]))
            axes[1] = dims[axis]
        shapes.append(axes)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as staging:
        graph = Path(staging) / "model.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
                program = torch.onnx.export(
                    RunForward(run, names),
                    tuple(example.values()),
                    dynamo=True,
                    dynamic_shapes=(tuple(shapes),),  # forward(*tensors): one tuple of inputs
                    input_names=names,
                    output_names=[spec["output"]],
                    opset_version=opset,
                    verbose=False,
                )
                program.save(str(graph))
        except Exception as error:  # the exporter's own errors are long; one line, the cause kept
            raise UserError(f"{run.run_dir}: the ONNX export failed ({type(error).__name__}: {error})") from error
        session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        worst = 0.0
        for batch_size, length in ((3, max(1, spec["length"] // 3)), (1, spec["length"])):
            batch = run.example_batch(batch_size, length)
            expected = run.forward(batch).float().numpy()
            got = session.run(None, {name: tensor.numpy() for name, tensor in batch.items()})[0]
            worst = max(worst, float(abs(got - expected).max()))
        if worst > TOLERANCE:
            raise UserError(
                f"the ONNX graph differs from PyTorch by {worst:.2e} (more than {TOLERANCE:g}); nothing kept"
            )
        generation = _generation(run, Path(staging), opset) if run.task in ("translate", "lm") else None
        described = {
            "task": run.task,
            "run_dir": str(run.run_dir),
            "graph": "model.onnx",
            "inputs": [
                {
                    "name": n,
                    "dtype": str(example[n].dtype).removeprefix("torch."),
                    "axes": ["batch", *filter(None, [spec["axes"].get(n)])],
                }
                for n in names
            ],
            "output": {"name": spec["output"], "meaning": spec["meaning"]},
            "max_length": spec["length"],
            "max_abs_diff": worst,
            **({"generation": generation} if generation else {}),
            **{k: run.config[k] for k in ("classes", "normalize", "specials") if k in run.config},
        }
        out.mkdir(parents=True, exist_ok=True)
        shutil.move(str(graph), out / "model.onnx")
        for name in (generation or {}).get("graphs", []):
            shutil.move(str(Path(staging) / name), out / name)
        for name in TOKENIZER_FILES:
            if (run.run_dir / name).is_file():
                shutil.copyfile(run.run_dir / name, out / name)
        with atomic_path(out / "export.json") as tmp:
            tmp.write_text(json.dumps(described, indent=2) + "\n")
    log(f"exported {run.task} to {out / 'model.onnx'}; onnxruntime matches PyTorch within {worst:.1e}")
    if generation:
        log(
            f"generation graphs {', '.join(generation['graphs'])}: "
            "greedy decoding in onnxruntime gives attnkit's tokens"
        )
    return described


def _generation(run: Any, staging: Path, opset: int | None) -> dict[str, Any]:
    """Export the generation graphs (`attnkit.export.generation`) and check that greedy decoding over
    them in onnxruntime gives the tokens attnkit's greedy decoding gives; what export.json records."""
    from attnkit.decode import CausalLMStepper, Seq2SeqStepper, greedy_decode
    from attnkit.export.generation import export_generation, greedy

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            graphs = export_generation(run, staging, opset)
    except Exception as error:
        raise UserError(
            f"{run.run_dir}: the generation graphs' export failed ({type(error).__name__}: {error})"
        ) from error
    model, steps = run.model, 12
    if run.task == "translate":
        src = run.example_batch(3, max(2, model.config.max_len // 4))["src"]
        start = torch.full((3,), model.bos_id)
        specials = {"bos_id": model.bos_id, "eos_id": model.eos_id, "pad_id": model.config.pad_id}
        want = greedy_decode(
            Seq2SeqStepper(model, src), start, eos_id=model.eos_id, max_new_tokens=steps, pad_id=model.config.pad_id
        )
        got = greedy(
            staging,
            start[:, None].numpy(),
            max_new_tokens=steps,
            eos_id=model.eos_id,
            src=src.numpy(),
            pad_id=model.config.pad_id,
        )
    else:
        steps = min(steps, model.config.max_len - 2)
        start = run.example_batch(3, 2)["ids"].clamp(min=1)
        specials = {}
        want = greedy_decode(CausalLMStepper(model), start, eos_id=None, max_new_tokens=steps, pad_id=None)
        got = greedy(staging, start.numpy(), max_new_tokens=steps, eos_id=None, pad_id=None)
    if want.tolist() != got.tolist():
        raise UserError("greedy decoding over the exported generation graphs differs from attnkit's; nothing kept")
    return {"graphs": graphs, **specials, "checked_tokens": int(want.numel())}
