"""The `attnkit` command line: parses, calls the tasks, prints. No model code here.

    attnkit train classify --dataset reuters_r8 --config configs/classify/reuters_r8.yaml --out runs/r8
    attnkit evaluate RUN_DIR --data FILE
    attnkit predict RUN_DIR "some text" [--top-k 3]
    attnkit predict RUN_DIR --input texts.txt --output predictions.jsonl
    attnkit import hf path/to/save_pretrained/folder --out runs/gpt2
    attnkit demo

The tasks, their flags and what each command does with their runs come from the task registry
(`attnkit.tasks.registry`): `attnkit predict RUN_DIR --help` shows the flags of that run's task.
Errors in what the user gave (a missing file, a bad option, a corrupt checkpoint) print one line
and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from attnkit.engine.config import TrainConfig
from attnkit.errors import UserError
from attnkit.options import add_options, build, check_known, load_preset
from attnkit.precision import PRECISIONS
from attnkit.tasks.registry import all_tasks, get_task

# The commands that work on a trained run: (help, description before the task's own).
RUN_COMMANDS = {
    "evaluate": ("metrics of a trained run", "Evaluate a run; prints and writes RUN_DIR/metrics.json."),
    "predict": ("predict with a trained run", "Predict with a trained run."),
    "generate": ("sample text from a language-model run", "Continue a prompt with a trained run."),
    "explain": (
        "attention maps of inputs to a trained run",
        "Explain inputs to a run: the attention maps of every layer and head (PNG heatmaps, JSON), the "
        "prediction, a saliency per input token (classify, vision) and the alignment (translate).",
    ),
}


def build_parser(run_task: str | None = None) -> argparse.ArgumentParser:
    """The argument parser for every `attnkit` sub-command; the run commands (evaluate, predict,
    generate) carry the flags of `run_task`, the task of the run they were given, when known."""

    parser = argparse.ArgumentParser(
        prog="attnkit",
        description="Self-attention and the Transformer from first principles, put to work.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser("train", help="train a model for a task", description="Train a model.")
    tasks = train.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for name, spec in all_tasks().items():
        task = tasks.add_parser(name, help=spec.help, description=spec.description)
        _add_common_train(task)
        add_options(task, spec.options, "data, tokenizer and model")
        add_options(task, TrainConfig, "training")

    for command, (help_text, description) in RUN_COMMANDS.items():
        sub = commands.add_parser(command, help=help_text, description=description)
        sub.add_argument("run_dir", help="a run directory written by `attnkit train`")
        sub.add_argument("--device", default="cpu", help="cpu or cuda")
        if command != "explain":  # explain takes gradients and the written-out attention: float32
            _add_precision(sub)
        spec = get_task(run_task) if run_task else None
        if spec is not None and command in spec.commands:
            sub.description = f"{description} {spec.commands[command].description}"
            spec.commands[command].add_arguments(sub.add_argument_group(f"{run_task} runs"))
        else:
            supported = {name: s.commands[command] for name, s in all_tasks().items() if command in s.commands}
            sub.description = (
                f"{description} Its flags depend on the run's task: `attnkit {command} RUN_DIR --help` lists them."
            )
            sub.epilog = "; ".join(f"{name}: {c.description}" for name, c in supported.items())

    data = commands.add_parser("data", help="datasets", description="Fetch standard datasets.")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_commands.required = True
    download = data_commands.add_parser(
        "download",
        help="fetch a standard dataset into the data directory, checking checksums",
        description="Fetch a dataset from its official source into --data-dir (default $ATTNKIT_DATA/NAME, "
        "else ~/.cache/attnkit/data/NAME), checking SHA-256 digests; nothing is kept from a failed download.",
    )
    download.add_argument("name", help="reuters21578, ag_news or thucnews_title")
    download.add_argument("--data-dir", help="folder to put the files in")
    download.add_argument("--mirror", help="fetch the same file names from this base URL instead")

    importer = commands.add_parser(
        "import",
        help="pretrained weights in: a Hugging Face checkpoint as a run directory",
        description="Import a pretrained checkpoint into attnkit's own modules as an ordinary run directory "
        "(config.json, model.safetensors, the tokenizer or image preprocessing), so that predict, evaluate, "
        "generate and explain work on it. Reads config.json and safetensors only, never a pickle.",
    )
    sources = importer.add_subparsers(dest="source_kind", metavar="FORMAT")
    sources.required = True
    hf = sources.add_parser(
        "hf",
        help="a Hugging Face save_pretrained folder: GPT-2, BERT, ViT or Marian",
        description="Import a folder written by transformers' save_pretrained (config.json, model.safetensors "
        "and the tokenizer's or image processor's files): GPT-2 becomes an lm run, BERT a classify run (with its "
        "classification head, or a new one of --num-labels classes) or an mlm run, ViT a vision run, Marian "
        "(OPUS-MT) a translate run.",
    )
    hf.add_argument("source", help="the save_pretrained folder")
    hf.add_argument("--out", required=True, help="the run directory to write")
    hf.add_argument(
        "--task", help="lm, classify, mlm, vision or translate (default: what the checkpoint's type and head imply)"
    )
    hf.add_argument("--num-labels", type=int, help="classes of a new classification head (classify, vision)")

    exporter = commands.add_parser(
        "export",
        help="models out: a run as an ONNX graph",
        description="Export a run's forward pass for another runtime.",
    )
    formats = exporter.add_subparsers(dest="export_format", metavar="FORMAT")
    formats.required = True
    onnx = formats.add_parser(
        "onnx",
        help="an ONNX graph for onnxruntime, checked against PyTorch",
        description="Export the run's forward pass (logits or scores, as `explain` calls it) to DIR/model.onnx with "
        "dynamic batch and lengths, run it in onnxruntime on batches of other shapes with a padded row and compare "
        "with PyTorch (fails above 1e-4), and write DIR/export.json and the tokenizer beside it. For translate and "
        "lm runs also the generation graphs (encoder.onnx, decoder_step.onnx, past keys and values as inputs and "
        "outputs), checked by greedy decoding against attnkit's.",
    )
    onnx.add_argument("run_dir", help="a run directory")
    onnx.add_argument("--out", required=True, help="the folder to write (new or empty)")
    onnx.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")

    server = commands.add_parser(
        "serve",
        help="serve a run's predictions over HTTP",
        description='Serve a run over HTTP (FastAPI + uvicorn): POST /v1/predict with {"inputs": [...], '
        '...options} answers {"predictions": [...]}, one object per input with the fields of a line of '
        "`attnkit predict --output FILE.jsonl`; GET /health, GET /v1/info, OpenAPI page at /docs. Requests "
        "that arrive together are answered by one batched model call. Every task; images as base64.",
    )
    server.add_argument("run_dir", help="a run directory")
    server.add_argument("--device", default="cpu", help="cpu or cuda")
    _add_precision(server)
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    server.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    server.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="most inputs answered by one model call (default 32; 1: every request alone)",
    )
    server.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a request waits for others to batch with (default 5; a request alone never waits)",
    )
    server.add_argument(
        "--api-key",
        help="require this key (Authorization: Bearer KEY, or X-API-Key) on /v1/; default: the environment "
        "variable ATTNKIT_API_KEY, which is safer (other users can read a command line, e.g. with ps)",
    )
    server.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnx"),
        help="torch (default), or onnx: run in onnxruntime on an export of the run (classify, mlm, recommend, "
        "vision: the forward pass; translate: greedy and beam search over the generation graphs), exported at "
        "start unless --onnx names one",
    )
    server.add_argument("--onnx", help="with --backend onnx: a folder `attnkit export onnx` wrote for this run")

    commands.add_parser(
        "demo",
        help="show the core at work: the base model's size, fused vs. reference attention",
        description="Build the paper's base Transformer and report its parameter count; show that the fused "
        "and step-by-step attention paths agree and how their memory differs at a long length.",
    )
    return parser


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 (default); bf16: weights and activations in bfloat16 (fast on GPUs and CPUs with AVX-512 "
        "BF16 or AMX); int8: linear layers' weights in int8, dynamically quantized (CPU only)",
    )


def _add_common_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML preset; command-line options override it")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")


def _run_dir_given(argv: list[str]) -> str | None:
    """The RUN_DIR of `attnkit evaluate|predict|generate RUN_DIR ...`: the first word after the
    command that is not a flag (nor --device's value)."""
    words = iter(argv[1:])
    for word in words:
        if word in ("--device", "--precision"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `attnkit` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run_task = _task_of_run(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parser = build_parser(run_task)
    args = parser.parse_args(argv)
    try:
        return _dispatch(args, run_task)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.filename is None:  # not about a path the user gave or can fix: keep the traceback
            raise
        # A file or folder that cannot be read or written (permissions, a full disk, a read-only
        # file system): the user's to fix, said in one line like every other bad input.
        print(f"error: {error.filename}: {error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stopped:  # training's `Interrupted` says where it stopped and what to do
        print(f"interrupted: {stopped}" if str(stopped) else "interrupted", file=sys.stderr)
        return 128 + getattr(stopped, "signum", signal.SIGINT)


def _task_of_run(argv: list[str]) -> str | None:
    """For a run command, the task of the run it names, so that its parser carries that task's flags.

    A run that cannot be opened, or a command the task does not support, is an error here, before
    the task's flags are parsed; with --help the command's general help is shown instead."""
    if not argv or argv[0] not in RUN_COMMANDS:
        return None
    asks_help = "-h" in argv or "--help" in argv
    run_dir = _run_dir_given(argv)
    if run_dir is None:
        return None
    from attnkit.runs import run_task

    try:
        task = run_task(run_dir)
    except UserError:
        if asks_help:
            return None
        raise
    if argv[0] not in get_task(task).commands and not asks_help:
        raise UserError(f"{run_dir}: `attnkit {argv[0]}` does not apply to {task} runs")
    return task


def _dispatch(args: argparse.Namespace, run_task: str | None) -> int:
    if args.command == "demo":
        from attnkit import demo

        demo.run()
        return 0
    if args.command == "train":
        from attnkit.engine.distributed import teardown

        code = _train(args)
        teardown()  # only after success: a failed process must not wait at a barrier for the others
        return code
    if args.command in RUN_COMMANDS:
        from attnkit.runs import open_run

        command = get_task(run_task).commands[args.command]
        return command.run(open_run(args.run_dir, args.device, getattr(args, "precision", "fp32")), args)
    if args.command == "export":
        from attnkit.export.onnx import export_onnx
        from attnkit.runs import open_run

        export_onnx(open_run(args.run_dir), args.out, opset=args.opset)
        return 0
    if args.command == "serve":
        from attnkit.runs import open_run

        try:
            from attnkit.serve.app import listen, serve
        except ImportError:
            raise UserError("attnkit serve needs fastapi and uvicorn: pip install 'attnkit[serve]'") from None
        if args.max_batch < 1 or args.max_wait_ms < 0 or not 0 < args.port < 65536:
            raise UserError("--max-batch must be at least 1, --max-wait-ms at least 0, --port in 1..65535")
        if args.onnx and args.backend != "onnx":
            raise UserError("--onnx DIR goes with --backend onnx")
        sock = listen(args.host, args.port)  # a port in use fails now, not after loading the model
        with sock, tempfile.TemporaryDirectory() as scratch:
            run = open_run(args.run_dir, args.device, args.precision)
            if args.backend == "onnx":
                from attnkit.export.onnx import export_onnx
                from attnkit.export.runtime import check_onnx_backend, use_onnx

                check_onnx_backend(run)  # before an export that would be in vain
                folder = args.onnx
                if folder is None:
                    folder = Path(scratch) / "onnx"
                    export_onnx(open_run(args.run_dir), folder)
                use_onnx(run, folder)
            serve(
                run,
                host=args.host,
                port=args.port,
                max_batch=args.max_batch,
                max_wait_ms=args.max_wait_ms,
                api_key=args.api_key or os.environ.get("ATTNKIT_API_KEY") or None,
                sock=sock,
            )
        return 0
    if args.command == "import":
        from attnkit.hf.runs import import_run

        if args.num_labels is not None and args.num_labels < 2:
            raise UserError(f"--num-labels must be at least 2, got {args.num_labels}")
        import_run(args.source, args.out, task=args.task, num_labels=args.num_labels)
        return 0
    if args.command == "data":
        from attnkit.data.datasets import data_root
        from attnkit.data.download import download

        download(args.name, Path(args.data_dir) if args.data_dir else data_root() / args.name, mirror=args.mirror)
        return 0
    raise UserError(f"unknown command {args.command}")


def _train(args: argparse.Namespace) -> int:
    spec = get_task(args.task)
    given = {k: v for k, v in vars(args).items() if k not in ("command", "task", "config", "resume")}
    preset = load_preset(args.config)
    check_known(preset, spec.options, TrainConfig)
    train_config = build(TrainConfig, spec.train_defaults, preset, given)
    if args.resume:
        out = given.get("out") or preset.get("out")
        if not out:
            raise UserError("--resume needs --out RUN_DIR")
        # The run's own config.json gives the data and model; only device, threads and progress apply.
        metrics = spec.train(None, train_config, resume=True, run_dir=out)
    else:
        metrics = spec.train(build(spec.options, preset, given), train_config)
    if metrics:
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
