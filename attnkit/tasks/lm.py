"""Language modelling: a GPT trained on a plain-text file, on the one engine, and text generation.

Train: read the text, split it 90/10 as nanoGPT does (the first 90% trains), tokenize by
characters or with a byte-level BPE trained on the training part, and train a `GPT` on random
windows of `max_len` tokens; the validation loss is the mean next-token cross-entropy over every
non-overlapping window of the held-out part. Generate: sample from a run on its KV cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from attnkit.data.chars import CharVocab
from attnkit.data.readers import read_lines
from attnkit.data.tokenizer import decode_text, load_tokenizer, train_tokenizer
from attnkit.decode import CausalLMStepper, has_cpp_compiler, sample
from attnkit.engine import Batches, Trainer, load_weights, unwrap
from attnkit.engine.evaluation import collect
from attnkit.errors import DataError, UserError
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.nn import linear_cross_entropy
from attnkit.options import bounds, check_model_options, config_from, model_option
from attnkit.tasks.adapters import HiddenForward
from attnkit.tasks.base import Command, Run, TaskSpec, metrics_command, random_ids
from attnkit.tasks.rundir import RunStart, read_init_run, run_config, write_metrics, write_new_run
from attnkit.viz.command import explain_command

TokenizerKind = Literal["char", "bytebpe"]


@dataclass(frozen=True, kw_only=True)
class LmOptions:
    """Everything `attnkit train lm` takes besides the engine's TrainConfig."""

    out: str = field(default="runs/lm", metadata={"help": "run directory to write"})
    text: str | None = field(default=None, metadata={"help": "plain-text file to model (.gz accepted)"})
    valid_fraction: float = field(default=0.1, metadata={"help": "the last share of the text held out"})
    tokenizer: TokenizerKind = field(default="char", metadata={"help": "char or bytebpe"})
    vocab_size: int = field(default=4096, metadata={**bounds(ge=261), "help": "bytebpe vocabulary size"})
    max_len: int = field(default=256, metadata={"help": "context length in tokens (nanoGPT's block_size)"})
    d_model: int = model_option(GPTConfig, "d_model", "model width")
    n_heads: int = model_option(GPTConfig, "n_heads", "attention heads")
    n_layers: int = model_option(GPTConfig, "n_layers", "blocks")
    d_ff: int | None = model_option(GPTConfig, "d_ff", "feed-forward width (default 4 d_model)")
    dropout: float = model_option(GPTConfig, "dropout", "dropout")
    positional: Literal["learned", "rotary"] = model_option(GPTConfig, "positional", "learned or rotary")
    activation: Literal["gelu", "gelu_tanh"] = model_option(
        GPTConfig, "activation", "gelu (exact, as nanoGPT) or gelu_tanh (GPT-2's approximation)"
    )
    bias: bool = model_option(GPTConfig, "bias", "biases in linear layers")
    steps_per_epoch: int | None = field(
        default=None,
        metadata={**bounds(ge=1), "help": "random windows batches per 'epoch' (default: the text's size once)"},
    )
    init: str | None = field(
        default=None,
        metadata={
            "help": "fine-tune this lm run (e.g. an imported GPT-2): its model and tokenizer, not new ones "
            "(the model options and --tokenizer are taken from it)"
        },
    )

    def __post_init__(self) -> None:
        if not 0 < self.valid_fraction < 1:
            raise UserError(f"--valid-fraction must be between 0 and 1, got {self.valid_fraction}")
        check_model_options(lambda: self.model_config(vocab_size=2))

    def check_training(self) -> None:
        """What training needs besides valid values (an imported run has no text of its own)."""
        if not self.text:
            raise UserError("give --text FILE")

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The GPT these options describe, for a vocabulary of `vocab_size` tokens."""
        return config_from(self, GPTConfig, vocab_size=vocab_size)


CPU_PRESET = "--config configs/lm/shakespeare_char.yaml"  # the defaults are nanoGPT's GPU-sized model

TRAIN_DEFAULTS = {
    "metric": "loss",
    "metric_mode": "min",
    "lr": 1e-3,
    "beta2": 0.99,
    "weight_decay": 0.1,
    "schedule": "cosine",
    "warmup_steps": 100,
    "min_lr_ratio": 0.1,
    "batch_size": 64,
    "epochs": 1,
}


class Codec:
    """The run's tokenizer behind one interface: characters (`CharVocab`) or byte-level BPE."""

    def __init__(self, kind: str, tokenizer: Any) -> None:
        self.kind, self.tokenizer = kind, tokenizer

    @classmethod
    def train(cls, kind: TokenizerKind, text: str, vocab_size: int) -> Codec:
        if kind == "char":
            return cls(kind, CharVocab.from_text(text))
        return cls(kind, train_tokenizer(text.splitlines(keepends=True), kind="bytebpe", vocab_size=vocab_size))

    @classmethod
    def load(cls, run_dir: Path, kind: str) -> Codec:
        if kind == "char":
            return cls(kind, CharVocab.load(run_dir / "tokenizer.json"))
        return cls(kind, load_tokenizer(run_dir / "tokenizer.json"))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        if self.kind == "char":
            return self.tokenizer.encode(text)
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.kind == "char" else decode_text(self.tokenizer, ids)

    def save(self, path: Path) -> None:
        from attnkit.atomic import atomic_path

        if self.kind == "char":
            self.tokenizer.save(path)
        else:
            with atomic_path(path) as tmp:
                self.tokenizer.save(str(tmp))


class LmTask:
    """Next-token cross-entropy (chunked through the tied output layer); validation loss and perplexity."""

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        hidden = model(batch["x"])  # (B, T, D) via `HiddenForward`
        weight = unwrap(model).lm_head.weight  # (V, D); unwrap also strips HiddenForward
        target = batch["y"].reshape(-1)
        return linear_cross_entropy(hidden.reshape(-1, hidden.size(-1)), weight, target), target.numel()

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        gpt = unwrap(model)
        logits = gpt.lm_head(model(batch["x"])).float()  # (B, T, V)
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), batch["y"], reduction="none")  # (B, T)
        return {"nll": nll.sum(dim=1), "tokens": torch.full_like(nll[:, 0], nll.size(1))}

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        loss = float(rows["nll"].sum() / rows["tokens"].sum())
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}


def windows(tokens: Tensor, max_len: int, batch_size: int, *, steps: int, seed: int) -> Batches:
    """Random windows of max_len + 1 tokens (input and shifted target), a fresh draw each epoch."""
    starts = len(tokens) - max_len - 1
    if starts < 1:
        raise DataError(f"the training text has {len(tokens)} tokens, fewer than a window of {max_len + 1}")

    def plan(epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([seed, epoch])
        offsets = rng.integers(0, starts, size=(steps, batch_size))
        return offsets.tolist()

    def collate(offsets: list[int]) -> dict[str, Tensor]:
        chunk = torch.stack([tokens[o : o + max_len + 1] for o in offsets]).long()  # (B, T + 1)
        return {"x": chunk[:, :-1], "y": chunk[:, 1:]}

    return Batches(plan, collate)


def held_out(tokens: Tensor, max_len: int, batch_size: int) -> Batches:
    """Every non-overlapping window of the validation tokens, in order."""
    count = (len(tokens) - 1) // max_len
    if count < 1:
        raise DataError(f"the validation text has {len(tokens)} tokens, fewer than a window of {max_len + 1}")
    offsets = [i * max_len for i in range(count)]
    batches = [offsets[i : i + batch_size] for i in range(0, count, batch_size)]

    def collate(chosen: list[int]) -> dict[str, Tensor]:
        chunk = torch.stack([tokens[o : o + max_len + 1] for o in chosen]).long()
        return {"x": chunk[:, :-1], "y": chunk[:, 1:]}

    return Batches(lambda _epoch: batches, collate)


def read_text(path: str) -> str:
    """The whole file as text (strict UTF-8, `.gz` accepted); an empty file is an error."""
    text = "\n".join(read_lines(path))
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return text + "\n"


def split_text(text: str, valid_fraction: float) -> tuple[str, str]:
    """The training text (the first 1 - valid_fraction of the characters) and the held-out rest."""
    cut = int(len(text) * (1 - valid_fraction))
    return text[:cut], text[cut:]


def validation_ids(codec: Codec, valid_text: str, log: Any = print) -> Tensor:
    """The held-out text as token ids (N,); characters a character vocabulary lacks are left out."""
    if codec.kind == "char" and codec.tokenizer.unknown(valid_text):
        valid_text = "".join(c for c in valid_text if c in codec.tokenizer.index)
        log("note: characters of the validation text absent from the training text were left out")
    return torch.tensor(codec.encode(valid_text), dtype=torch.int32)


# ---------------------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class InitialRun:
    """The lm run that `--init` fine-tunes: its directory, model configuration, and the new run's
    options with the model's and tokenizer's fields taken from it."""

    run_dir: Path
    model_config: GPTConfig
    options: LmOptions

    @classmethod
    def read(cls, options: LmOptions) -> InitialRun:
        init_dir, config, theirs = read_init_run(options.init, "lm", "an lm run (e.g. an imported GPT-2)", LmOptions)
        model_config = GPTConfig.from_dict(config["model"])
        if options.max_len > model_config.max_len:
            raise UserError(
                f"--max-len {options.max_len} exceeds the initial model's context of {model_config.max_len}"
            )
        kept = ("tokenizer", "vocab_size", *_MODEL_FIELDS)
        return cls(init_dir, model_config, dataclasses.replace(options, **{f: getattr(theirs, f) for f in kept}))


_MODEL_FIELDS = ("d_model", "n_heads", "n_layers", "d_ff", "dropout", "positional", "activation", "bias")


def train_run(start: RunStart) -> dict[str, float]:
    """`attnkit train lm`: train a GPT; report the validation loss of the best checkpoint."""
    where, run_dir, options, train_config, saved, log, resume = start
    init = None if resume or not options.init else InitialRun.read(options)
    if init is not None:
        options = init.options
    train_text, valid_text = split_text(read_text(options.text), options.valid_fraction)
    if resume:
        codec = Codec.load(run_dir, options.tokenizer)
    elif init is not None:
        codec = Codec.load(init.run_dir, options.tokenizer)
    else:
        codec = Codec.train(options.tokenizer, train_text, options.vocab_size)
    train_ids = torch.tensor(codec.encode(train_text), dtype=torch.int32)
    valid_ids = validation_ids(codec, valid_text, log)
    if saved is not None:  # resumed: the model the run was started with (an --init model's too)
        model_config = GPTConfig.from_dict(saved["model"])
    else:
        model_config = init.model_config if init is not None else options.model_config(codec.vocab_size)
    steps = options.steps_per_epoch or max(1, len(train_ids) // (options.max_len * train_config.batch_size))
    train_batches = windows(train_ids, options.max_len, train_config.batch_size, steps=steps, seed=train_config.seed)
    valid_batches = held_out(valid_ids, options.max_len, train_config.batch_size)
    if not resume:
        config = run_config("lm", options, model_config, train_config)
        write_new_run(run_dir, where, config, files=lambda directory: codec.save(directory / "tokenizer.json"))
    log(
        f"data: {len(train_ids):,} training / {len(valid_ids):,} validation tokens ({options.tokenizer}, "
        f"vocabulary {codec.vocab_size:,}); {steps} batches of {train_config.batch_size} windows per epoch"
    )
    torch.manual_seed(train_config.seed)
    model = GPT(model_config)
    if init is not None:
        load_weights(model, init.run_dir / "model.safetensors")
        log(f"model: GPT, {model.num_parameters():,} parameters, from {init.run_dir}")
    else:
        log(f"model: GPT, {model.num_parameters():,} parameters")
    hint = f"{CPU_PRESET} trains a CPU-sized model in minutes" if where.device.type == "cpu" else ""
    trainer = Trainer(
        HiddenForward(model), LmTask(), train_config, run_dir, train_batches, valid_batches, where, log, hint
    )
    trainer.fit(resume=resume)
    load_weights(model, run_dir / "model.safetensors")
    metrics = trainer.evaluate(valid_batches)
    return report(run_dir, metrics, log) if where.is_main else {}


def report(run_dir: Path, metrics: dict[str, float], log: Any) -> dict[str, float]:
    """The validation loss and perplexity, printed and written to metrics.json."""
    result = {"val_loss": metrics["loss"], "val_ppl": metrics["ppl"]}
    write_metrics(run_dir, result)
    log(f"validation: loss {result['val_loss']:.4f}  perplexity {result['val_ppl']:.2f}")
    return result


class LanguageModelRun(Run, task="lm", options=LmOptions, model=GPT, config=GPTConfig):
    """A trained `GPT` with its tokenizer (characters or byte-level BPE)."""

    options: LmOptions

    def setup(self) -> None:
        self.codec = Codec.load(self.run_dir, self.options.tokenizer)
        self.tokenizer = self.codec.tokenizer
        # () -> the stepper generation samples with; None = `CausalLMStepper` on the model
        # (`attnkit.export.runtime.use_onnx` sets one over the exported step graph)
        self.stepper: Any = None

    def encode(self, inputs: list[str]) -> dict[str, Tensor]:
        """Texts -> {"ids": (B, T)}: the last max_len tokens of each, right-padded with 0 (causal
        attention keeps every real token from seeing the padding after it)."""
        rows = [self._ids(text)[-self.model.config.max_len :] for text in inputs]
        width = max(len(row) for row in rows)
        return {"ids": torch.tensor([row + [0] * (width - len(row)) for row in rows], device=self.device)}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Next-token logits (B, T, V)."""
        with torch.no_grad():
            return self.model(batch["ids"])

    def evaluate(self, text: str | None = None, log: Any = print) -> dict[str, float]:
        """Validation loss and perplexity over every window of the held-out end of the run's text, or
        of all of the file `text`."""
        if text is not None:
            valid_text = read_text(text)
        elif not self.options.text:
            raise UserError(f"{self.run_dir} has no text of its own (it was imported): give --text FILE")
        else:
            _, valid_text = split_text(read_text(self.options.text), self.options.valid_fraction)
        data = held_out(validation_ids(self.codec, valid_text, log), self.options.max_len, 32)
        task, model = LmTask(), HiddenForward(self.model)
        metrics = task.metrics(
            collect(lambda batch: task.eval_step(model, batch), data.plan(0), data.collate, self.device)
        )
        return report(self.run_dir, metrics, log)

    def export_spec(self) -> dict[str, Any]:
        return {
            "length": self.model.config.max_len,
            "axes": {"ids": "length"},
            "output": "logits",
            "meaning": "next-token logits (batch, length, vocabulary)",
        }

    def example_batch(self, batch_size: int, length: int) -> dict[str, Tensor]:
        return {"ids": random_ids(batch_size, length, 0, self.model.config.vocab_size, 0)}

    record_options: ClassVar[dict[str, type]] = {
        "max_new_tokens": int,
        "temperature": float,
        "top_k": int,
        "top_p": float,
        "seed": int,
    }

    def records(self, inputs: list[str], **options: Any) -> list[dict[str, Any]]:
        """Per prompt: {"prompt", "continuation"}; options as `generate` (default: 100 greedy tokens)."""
        return [{"prompt": p, "continuation": c} for p, c in zip(inputs, self.predict(inputs, **options), strict=True)]

    def predict(self, inputs: list[str], **kwargs: Any) -> list[str]:
        """One continuation per prompt; keyword arguments as `generate` (default: 100 greedy tokens)."""
        settings = {"max_new_tokens": 100, "temperature": 0.0, **kwargs}
        return [self.generate(prompt, **settings)[0] for prompt in inputs]

    def _ids(self, text: str) -> list[int]:
        try:
            return self.codec.encode(text)
        except DataError as error:
            raise UserError(f"the prompt: {error}") from None

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        samples: int = 1,
        use_cache: bool = True,
        compile: bool = False,
    ) -> list[str]:
        """`samples` continuations of `prompt` (the prompt not repeated); the window slides past the context.
        `compile` runs the one-token steps through `torch.compile` on fixed-size caches (see
        `CausalLMStepper`): worth its start-up time (tens of seconds on a CPU) for long generations."""
        if max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
        if not (math.isfinite(temperature) and temperature >= 0):
            raise UserError(f"--temperature must be a finite number >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise UserError(f"--top-k must be at least 1, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:  # also false for nan
            raise UserError(f"--top-p must be in (0, 1], got {top_p}")
        if not prompt:
            raise UserError("give a --prompt (at least one character)")
        if compile and not use_cache:
            raise UserError("compiling steps on the KV cache: compile needs use_cache")
        if compile and self.device.type == "cpu" and not has_cpp_compiler():
            raise UserError(
                "--compile on a CPU needs a C++ compiler for torch.compile (g++, or the one CXX names): "
                "install one, or leave out --compile"
            )
        ids = self._ids(prompt)[-self.model.config.max_len :]
        start = torch.tensor([ids] * samples, device=self.device)  # (N, T0)
        if self.stepper is not None:
            if compile or not use_cache:
                raise UserError("the ONNX backend steps on its own cache: compile and use_cache=False do not apply")
            stepper = self.stepper()
        else:
            context = self.model.config.max_len
            stepper = CausalLMStepper(self.model, use_cache=use_cache, max_len=context, compile=compile)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        tokens = sample(
            stepper,
            start,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )
        return [self.codec.decode(row.tolist()) for row in tokens]


# ---------------------------------------------------------------------------------------- commands


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy")
    parser.add_argument("--top-k", type=int, help="sample from the k most likely tokens only")
    parser.add_argument("--top-p", type=float, help="sample from the smallest set of tokens with this mass")
    parser.add_argument("--samples", type=int, default=1, help="independent continuations")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the one-token decoding step (torch.compile on fixed-size KV caches): faster steps, "
        "after a start-up of tens of seconds on a CPU; for long generations",
    )


def _generate(run: LanguageModelRun, args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise UserError("--samples must be at least 1")
    texts = run.generate(
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


HELP = "GPT-style language modelling on a plain-text file"
DESCRIPTION = (
    "Train a GPT (pre-norm causal blocks, tied output layer) on random windows of a text file tokenized by "
    "characters or byte-level BPE; the last --valid-fraction of the text is held out. Sample from it with "
    "`attnkit generate RUN_DIR`. Use --max-steps for nanoGPT-style iteration budgets. The default model is "
    "nanoGPT's GPU-sized one; on a CPU, --config configs/lm/shakespeare_char.yaml trains in minutes."
)
COMMANDS = {
    "evaluate": metrics_command(
        "lm: validation loss and perplexity on the held-out end of the run's text, or with --text on a file.",
        lambda parser: parser.add_argument("--text", help="a plain-text file to score, all of it, instead"),
        lambda run, args: run.evaluate(args.text),
    ),
    "generate": Command(
        _generate_arguments,
        _generate,
        "lm: continue a prompt token by token on the KV cache; past the model's context the window slides.",
    ),
    "explain": explain_command("lm"),
}
TASK = TaskSpec(
    "lm", HELP, DESCRIPTION, LmOptions, TRAIN_DEFAULTS, train_run, LanguageModelRun, COMMANDS, ("loss", "ppl")
)
train = TASK.train
