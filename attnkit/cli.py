"""The `attnkit` command line: parses, calls the tasks, prints. No model code here.

    attnkit train classify --dataset reuters_r8 --config configs/classify/reuters_r8.yaml --out runs/r8
    attnkit evaluate RUN_DIR --data FILE
    attnkit predict RUN_DIR "some text" [--top-k 3]
    attnkit predict RUN_DIR --input texts.txt --output predictions.jsonl
    attnkit demo

Errors in what the user gave (a missing file, a bad option, a corrupt checkpoint) print one line
and exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from attnkit.atomic import atomic_path
from attnkit.engine.config import TrainConfig
from attnkit.errors import UserError
from attnkit.options import add_options, build, check_known, load_preset


def _train_tasks() -> dict[str, tuple[object, type, str, str]]:
    """TASK -> (module with train() and TRAIN_DEFAULTS, options class, help, description)."""
    from attnkit.tasks import classify, lm, mlm, recommend, translate, vision

    return {
        "classify": (
            classify,
            classify.ClassifyOptions,
            "text classification with a Transformer encoder",
            "Train a TextClassifier on labelled texts (files or a standard dataset), keep the best checkpoint "
            "by validation accuracy, and report test metrics.",
        ),
        "mlm": (
            mlm,
            mlm.MlmOptions,
            "masked-language-model pre-training of a text encoder",
            "Pre-train a text encoder as a masked language model on unlabelled text; start a classifier from "
            "it with `attnkit train classify --init RUN_DIR`.",
        ),
        "recommend": (
            recommend,
            recommend.RecommendOptions,
            "sequential recommendation with SASRec",
            "Train SASRec on users' item histories (leave-one-out split), keep the best checkpoint by validation "
            "NDCG@10, and report test HR@10, NDCG@10 and MRR under the sampled (the paper's) and full-ranking "
            "protocols.",
        ),
        "translate": (
            translate,
            translate.TranslateOptions,
            "machine translation with the paper's encoder-decoder",
            "Train a Translator on parallel text (joint byte-level BPE, label smoothing, inverse-square-root "
            "schedule, token-count batches), average the last checkpoints, and score greedy and beam-search "
            "translations of the test set with sacreBLEU and chrF. --batch-size is not used: batches hold "
            "--max-tokens tokens.",
        ),
        "lm": (
            lm,
            lm.LmOptions,
            "GPT-style language modelling on a plain-text file",
            "Train a GPT (pre-norm causal blocks, tied output layer) on random windows of a text file tokenized by "
            "characters or byte-level BPE; the last --valid-fraction of the text is held out. Sample from it with "
            "`attnkit generate RUN_DIR`. Use --max-steps for nanoGPT-style iteration budgets.",
        ),
        "vision": (
            vision,
            vision.VisionOptions,
            "image classification with a Vision Transformer",
            "Train a ViT on MNIST, Fashion-MNIST, CIFAR-10 or an image folder (ROOT/train/<class>/, "
            "ROOT/test/<class>/), with augmentation on the fly, and report test accuracy.",
        ),
    }


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every `attnkit` sub-command."""

    parser = argparse.ArgumentParser(
        prog="attnkit",
        description="Self-attention and the Transformer from first principles, put to work.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser("train", help="train a model for a task", description="Train a model.")
    tasks = train.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for name, (_module, options_cls, help_text, description) in _train_tasks().items():
        task = tasks.add_parser(name, help=help_text, description=description)
        _add_common_train(task)
        add_options(task, options_cls, "data, tokenizer and model")
        add_options(task, TrainConfig, "training")

    evaluate = commands.add_parser(
        "evaluate",
        help="metrics of a trained run",
        description="Evaluate a run; prints and writes RUN_DIR/metrics.json. classify: on a labelled --data "
        "file. recommend: on the run's own test items, under --protocol.",
    )
    evaluate.add_argument("run_dir", help="a run directory written by `attnkit train`")
    evaluate.add_argument("--data", help="classify: labelled file in the training data's format")
    evaluate.add_argument(
        "--protocol",
        choices=["sampled", "full", "both"],
        default="both",
        help="recommend: sampled (100 negatives, the paper's), full ranking, or both (default)",
    )
    evaluate.add_argument("--src", help="translate: source sentences, one per line")
    evaluate.add_argument("--ref", help="translate: reference translations, line-aligned with --src")
    evaluate.add_argument("--ref-tok", help="translate: lowercased tokenized references, for tokenized BLEU")
    evaluate.add_argument("--beam", type=int, help="translate: beam size (default: the run's; 1 = greedy)")
    evaluate.add_argument("--alpha", type=float, help="translate: beam search's length penalty α (default: the run's)")
    evaluate.add_argument("--device", default="cpu", help="cpu or cuda")

    predict = commands.add_parser(
        "predict",
        help="predict with a trained run",
        description="classify: the class of texts given on the command line or in a file. recommend: the top-k "
        "unseen items for a known --user or for a --history of items.",
    )
    predict.add_argument("run_dir", help="a run directory written by `attnkit train`")
    predict.add_argument(
        "texts", nargs="*", help="classify: texts to classify; translate: sentences; vision: image files"
    )
    predict.add_argument("--input", help="file of texts: one per line (.txt) or JSON lines with a 'text' field")
    predict.add_argument("--output", help="write predictions here (.csv or .jsonl) instead of printing")
    predict.add_argument(
        "-k", "--top-k", type=int, default=None, help="how many classes (default 1) or items (default 10) to show"
    )
    predict.add_argument("--user", help="recommend: a user id of the run's data")
    predict.add_argument("--history", help="recommend: item ids a new user interacted with, oldest first: 12,45,7")
    predict.add_argument("--items", help="recommend: item names (MovieLens movies.dat, or id<TAB>name lines)")
    predict.add_argument("--beam", type=int, help="translate: beam size (default: the run's; 1 = greedy)")
    predict.add_argument("--alpha", type=float, help="translate: beam search's length penalty α (default: the run's)")
    predict.add_argument("--device", default="cpu", help="cpu or cuda")

    generate = commands.add_parser(
        "generate",
        help="sample text from a language-model run",
        description="Continue a prompt with a trained `attnkit train lm` run, token by token on the KV cache; "
        "past the model's context the window slides.",
    )
    generate.add_argument("run_dir", help="a run directory written by `attnkit train lm`")
    generate.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    generate.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate")
    generate.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy")
    generate.add_argument("--top-k", type=int, help="sample from the k most likely tokens only")
    generate.add_argument("--top-p", type=float, help="sample from the smallest set of tokens with this mass")
    generate.add_argument("--samples", type=int, default=1, help="independent continuations")
    generate.add_argument("--seed", type=int, default=0, help="random seed")
    generate.add_argument("--device", default="cpu", help="cpu or cuda")
    generate.add_argument(
        "--compile",
        action="store_true",
        help="compile the one-token decoding step (torch.compile on fixed-size KV caches): faster steps, "
        "after a start-up of tens of seconds on a CPU; for long generations",
    )

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

    commands.add_parser(
        "demo",
        help="show the core at work: the base model's size, fused vs. reference attention",
        description="Build the paper's base Transformer and report its parameter count; show that the fused "
        "and step-by-step attention paths agree and how their memory differs at a long length.",
    )
    return parser


def _add_common_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML preset; command-line options override it")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `attnkit` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from attnkit import demo

        demo.run()
        return 0
    if args.command == "train":
        from attnkit.engine.distributed import teardown

        code = _train(args)
        teardown()  # only after success: a failed process must not wait at a barrier for the others
        return code
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "generate":
        return _generate(args)
    if args.command == "data":
        from attnkit.data.datasets import data_root
        from attnkit.data.download import download

        download(args.name, Path(args.data_dir) if args.data_dir else data_root() / args.name, mirror=args.mirror)
        return 0
    raise UserError(f"unknown command {args.command}")


def _train(args: argparse.Namespace) -> int:
    module, options_cls, _, _ = _train_tasks()[args.task]
    given = {k: v for k, v in vars(args).items() if k not in ("command", "task", "config", "resume")}
    preset = load_preset(args.config)
    check_known(preset, options_cls, TrainConfig)
    train_config = build(TrainConfig, module.TRAIN_DEFAULTS, preset, given)
    if args.resume:
        out = given.get("out") or preset.get("out")
        if not out:
            raise UserError("--resume needs --out RUN_DIR")
        # The run's own config.json gives the data and model; only device, threads and progress apply.
        metrics = module.train(None, train_config, resume=True, run_dir=out)
    else:
        metrics = module.train(build(options_cls, preset, given), train_config)
    if metrics:
        print(json.dumps(metrics))
    return 0


def _run_task(run_dir: str) -> str:
    from attnkit.tasks.runs import open_run

    return open_run(run_dir)[1]["task"]


def _evaluate(args: argparse.Namespace) -> int:
    task = _run_task(args.run_dir)
    if task == "recommend":
        from attnkit.tasks.recommend import LoadedRecommender

        metrics = LoadedRecommender(args.run_dir, args.device).evaluate(args.protocol)
    elif task == "translate":
        metrics = _evaluate_translation(args)
    elif task == "vision":
        from attnkit.tasks.vision import LoadedVision

        metrics = LoadedVision(args.run_dir, args.device).evaluate()
    elif task == "classify":
        from attnkit.tasks.classify import LoadedClassifier

        if not args.data:
            raise UserError("evaluating a classify run needs --data FILE (labelled texts)")
        metrics = LoadedClassifier(args.run_dir, args.device).evaluate(args.data)
    else:
        raise UserError(f"{args.run_dir}: `attnkit evaluate` does not apply to {task} runs")
    print(json.dumps(metrics))
    return 0


def _predict(args: argparse.Namespace) -> int:
    if args.top_k is not None and args.top_k < 1:
        raise UserError("--top-k must be at least 1")
    task = _run_task(args.run_dir)
    if task == "recommend":
        return _recommend(args)
    if task == "translate":
        return _translate(args)
    if task == "vision":
        return _classify_images(args)
    if task != "classify":
        raise UserError(f"{args.run_dir}: `attnkit predict` does not apply to {task} runs")
    return _classify(args)


def _evaluate_translation(args: argparse.Namespace) -> dict[str, float]:
    from attnkit.data.parallel import read_parallel
    from attnkit.data.readers import read_lines
    from attnkit.tasks.translate import LoadedTranslator

    if not (args.src and args.ref):
        raise UserError("evaluating a translate run needs --src FILE and --ref FILE")
    search = _search(args)
    pairs = read_parallel(args.src, args.ref)
    ref_tok = read_lines(args.ref_tok) if args.ref_tok else None
    model = LoadedTranslator(args.run_dir, args.device)
    return model.evaluate(pairs.src, pairs.tgt, ref_tok=ref_tok, searches=(search,), beam=args.beam, alpha=args.alpha)


def _search(args: argparse.Namespace) -> str:
    """Check --beam and --alpha; the search they ask for: greedy for --beam 1, else beam."""
    if args.beam is not None and args.beam < 1:
        raise UserError("--beam must be at least 1")
    if args.alpha is not None and args.alpha < 0:
        raise UserError(f"--alpha must be at least 0, got {args.alpha}")
    return "greedy" if args.beam == 1 else "beam"


def _translate(args: argparse.Namespace) -> int:
    from attnkit.tasks.translate import LoadedTranslator, read_inputs

    search = _search(args)
    sentences = read_inputs(args.texts, args.input)
    model = LoadedTranslator(args.run_dir, args.device)
    translations = model.translate(sentences, search=search, beam=args.beam, alpha=args.alpha)
    if model.truncated:
        print(f"warning: {model.truncated} sentences were cut to {model.options.max_len} tokens", file=sys.stderr)
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(t + "\n" for t in translations), encoding="utf-8")
        print(f"wrote {len(translations)} translations to {args.output}")
        return 0
    for translation in translations:
        print(translation)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from attnkit.tasks.lm import LoadedLanguageModel

    if args.samples < 1:
        raise UserError("--samples must be at least 1")
    model = LoadedLanguageModel(args.run_dir, args.device)
    texts = model.generate(
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        samples=args.samples,
        compile=args.compile,
    )
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1}")
        print(args.prompt + text)
    return 0


def _classify_images(args: argparse.Namespace) -> int:
    from attnkit.tasks.vision import LoadedVision

    if not args.texts:
        raise UserError("give image files to classify: attnkit predict RUN_DIR image.png ...")
    model = LoadedVision(args.run_dir, args.device)
    for path, ranked in zip(args.texts, model.predict(args.texts, args.top_k or 1), strict=True):
        print(path)
        for label, probability in ranked:
            print(f"  {label}\t{probability:.3f}")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from attnkit.tasks.recommend import LoadedRecommender

    if args.texts or args.input or args.output:
        raise UserError("a recommend run takes --user ID or --history ITEMS, not texts, --input or --output")
    if bool(args.user) == bool(args.history):
        raise UserError("give either --user ID or --history ITEMS")
    model = LoadedRecommender(args.run_dir, args.device)
    history = model.user_history(args.user) if args.user else model.parse_history(args.history)
    names = model.names(args.items)
    who = f"user {args.user}" if args.user else f"a new user with {len(history)} item(s)"
    print(f"top {args.top_k or 10} unseen items for {who}:")
    for rank, (item, score) in enumerate(model.recommend(history, args.top_k or 10), start=1):
        original = model.data.items[item]
        name = names.get(original)
        print(f"  {rank:>2}. item {original}\t{score:.3f}" + (f"\t{name}" if name else ""))
    return 0


def _classify(args: argparse.Namespace) -> int:
    from attnkit.data.readers import read_lines
    from attnkit.tasks.classify import LoadedClassifier

    texts = list(args.texts)
    if args.input:
        texts += _read_inputs(args.input, read_lines)
    if not texts:
        raise UserError("give texts to classify, or --input FILE")
    model = LoadedClassifier(args.run_dir, args.device)
    predictions = model.predict(texts, args.top_k)
    if args.output:
        multi = model.options.multi_label and args.top_k is None
        _write_predictions(
            Path(args.output), texts, predictions, multi_label=multi, separator=model.options.label_separator
        )
        print(f"wrote {len(texts)} predictions to {args.output}")
        return 0
    for text, ranked in zip(texts, predictions, strict=True):
        shown = text if len(text) <= 70 else text[:67] + "..."
        print(f"{shown}")
        for label, probability in ranked:
            print(f"  {label}\t{probability:.3f}")
        if not ranked:
            print(f"  (no class reaches the threshold {model.options.threshold:g}; --top-k 3 shows the likeliest)")
    return 0


def _read_inputs(path: str, read_lines) -> list[str]:
    lines = read_lines(path)
    if path.endswith((".jsonl", ".jsonl.gz")):
        texts = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                texts.append(str(record["text"]))
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{path}: line {number} is not a JSON object with a 'text' field") from None
        return texts
    return [line for line in lines if line.strip()]


def _write_predictions(
    path: Path,
    texts: list[str],
    predictions: list[list[tuple[str, float]]],
    *,
    multi_label: bool = False,
    separator: str = "|",
) -> None:
    """Predictions as CSV or JSONL (by the suffix); multi-label rows hold every predicted label."""
    if path.suffix not in (".csv", ".jsonl"):
        raise UserError(f"{path}: --output must end in .csv or .jsonl")
    buffer = io.StringIO()
    if path.suffix == ".jsonl":
        for text, ranked in zip(texts, predictions, strict=True):
            if multi_label:
                labels, probs = [label for label, _ in ranked], [p for _, p in ranked]
                record = {"text": text, "labels": labels, "probabilities": probs}
            else:
                record = {
                    "text": text,
                    "label": ranked[0][0],
                    "probability": ranked[0][1],
                    "top_k": [{"label": label, "probability": p} for label, p in ranked],
                }
            buffer.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(buffer)
        writer.writerow(["text", "labels", "probabilities"] if multi_label else ["text", "label", "probability"])
        for text, ranked in zip(texts, predictions, strict=True):
            if multi_label:  # the labels joined by the run's separator, their probabilities likewise
                labels = separator.join(label for label, _ in ranked)
                writer.writerow([text, labels, separator.join(f"{p:.6f}" for _, p in ranked)])
            else:
                writer.writerow([text, ranked[0][0], f"{ranked[0][1]:.6f}"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
