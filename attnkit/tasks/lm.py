"""Language modelling: a GPT trained on a plain-text file, on the one engine, and text generation.

Train: read the text, split it 90/10 as nanoGPT does (the first 90% trains), tokenize by
characters or with a byte-level BPE trained on the training part, and train a `GPT` on random
windows of `max_len` tokens; the validation loss is the mean next-token cross-entropy over every
non-overlapping window of the held-out part. Generate: sample from a run on its KV cache.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from attnkit.data.chars import CharVocab
from attnkit.data.readers import read_lines
from attnkit.data.tokenizer import decode_text, load_tokenizer, train_tokenizer
from attnkit.decode import CausalLMStepper, has_cpp_compiler, sample
from attnkit.engine import Batches, TrainConfig, Trainer, load_weights, unwrap
from attnkit.errors import DataError, UserError
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.nn import linear_cross_entropy
from attnkit.options import check_model_options
from attnkit.tasks.adapters import HiddenForward
from attnkit.tasks.runs import open_run, start_run, write_metrics, write_new_run

TokenizerKind = Literal["char", "bytebpe"]


@dataclass(frozen=True, kw_only=True)
class LmOptions:
    """Everything `attnkit train lm` takes besides the engine's TrainConfig."""

    out: str = field(default="runs/lm", metadata={"help": "run directory to write"})
    text: str | None = field(default=None, metadata={"help": "plain-text file to model (.gz accepted)"})
    valid_fraction: float = field(default=0.1, metadata={"help": "the last share of the text held out"})
    tokenizer: TokenizerKind = field(default="char", metadata={"help": "char or bytebpe"})
    vocab_size: int = field(default=4096, metadata={"help": "bytebpe vocabulary size"})
    max_len: int = field(default=256, metadata={"help": "context length in tokens (nanoGPT's block_size)"})
    d_model: int = field(default=384, metadata={"help": "model width"})
    n_heads: int = field(default=6, metadata={"help": "attention heads"})
    n_layers: int = field(default=6, metadata={"help": "blocks"})
    d_ff: int | None = field(default=None, metadata={"help": "feed-forward width (default 4 d_model)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout"})
    positional: Literal["learned", "rotary"] = field(default="learned", metadata={"help": "learned or rotary"})
    activation: Literal["gelu", "gelu_tanh"] = field(
        default="gelu", metadata={"help": "gelu (exact, as nanoGPT) or gelu_tanh (GPT-2's approximation)"}
    )
    bias: bool = field(default=True, metadata={"help": "biases in linear layers"})
    steps_per_epoch: int | None = field(
        default=None, metadata={"help": "random windows batches per 'epoch' (default: the text's size once)"}
    )

    def __post_init__(self) -> None:
        if not self.text:
            raise UserError("give --text FILE")
        if not 0 < self.valid_fraction < 1:
            raise UserError(f"--valid-fraction must be between 0 and 1, got {self.valid_fraction}")
        check_model_options(lambda: self.model_config(vocab_size=2))

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(
            vocab_size=vocab_size,
            max_len=self.max_len,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            positional=self.positional,
            activation=self.activation,
            bias=self.bias,
        )


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


# ---------------------------------------------------------------------------------------- commands


def train(
    options: LmOptions | None,
    train_config: TrainConfig,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    log: Any = print,
) -> dict[str, float]:
    """`attnkit train lm`: train a GPT; report the validation loss of the best checkpoint."""
    where, run_dir, options, train_config, _, log = start_run(
        options, LmOptions, train_config, resume=resume, run_dir=run_dir, log=log
    )
    text = read_text(options.text)
    cut = int(len(text) * (1 - options.valid_fraction))
    train_text, valid_text = text[:cut], text[cut:]
    codec = (
        Codec.load(run_dir, options.tokenizer)
        if resume
        else Codec.train(options.tokenizer, train_text, options.vocab_size)
    )
    if options.tokenizer == "char" and codec.tokenizer.unknown(valid_text):
        valid_text = "".join(c for c in valid_text if c in codec.tokenizer.index)
        log("note: characters of the validation text absent from the training text were left out")
    train_ids = torch.tensor(codec.encode(train_text), dtype=torch.int32)
    valid_ids = torch.tensor(codec.encode(valid_text), dtype=torch.int32)
    model_config = options.model_config(codec.vocab_size)
    steps = options.steps_per_epoch or max(1, len(train_ids) // (options.max_len * train_config.batch_size))
    train_batches = windows(train_ids, options.max_len, train_config.batch_size, steps=steps, seed=train_config.seed)
    valid_batches = held_out(valid_ids, options.max_len, train_config.batch_size)
    if not resume:
        config = {
            "task": "lm",
            "options": dataclasses.asdict(options),
            "model": model_config.to_dict(),
            "train": train_config.to_dict(),
        }
        write_new_run(run_dir, where, config, files=lambda directory: codec.save(directory / "tokenizer.json"))
    log(
        f"data: {len(train_ids):,} training / {len(valid_ids):,} validation tokens ({options.tokenizer}, "
        f"vocabulary {codec.vocab_size:,}); {steps} batches of {train_config.batch_size} windows per epoch"
    )
    torch.manual_seed(train_config.seed)
    model = GPT(model_config)
    log(f"model: GPT, {model.num_parameters():,} parameters")
    trainer = Trainer(HiddenForward(model), LmTask(), train_config, run_dir, train_batches, valid_batches, where, log)
    trainer.fit(resume=resume)
    load_weights(model, run_dir / "model.safetensors")
    metrics = trainer.evaluate(valid_batches)
    if not where.is_main:
        return {}
    result = {"val_loss": metrics["loss"], "val_ppl": metrics["ppl"]}
    write_metrics(run_dir, result)
    log(f"validation: loss {result['val_loss']:.4f}  perplexity {result['val_ppl']:.2f}")
    return result


class LoadedLanguageModel:
    """A trained GPT run, for generation."""

    def __init__(self, run_dir: str | Path, device: str = "cpu") -> None:
        self.run_dir, config = open_run(run_dir)
        if config["task"] != "lm":
            raise UserError(f"{self.run_dir}: is a {config['task']} run, not an lm run")
        self.options = LmOptions(**config["options"])
        self.codec = Codec.load(self.run_dir, self.options.tokenizer)
        self.model = GPT(GPTConfig.from_dict(config["model"]))
        load_weights(self.model, self.run_dir / "model.safetensors")
        self.device = torch.device(device)
        self.model.to(self.device).eval()

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
        if temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise UserError(f"--top-k must be at least 1, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
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
        try:
            ids = self.codec.encode(prompt)
        except DataError as error:
            raise UserError(f"the prompt: {error}") from None
        ids = ids[-self.model.config.max_len :]
        start = torch.tensor([ids] * samples, device=self.device)  # (N, T0)
        stepper = CausalLMStepper(self.model, use_cache=use_cache, max_len=self.model.config.max_len, compile=compile)
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
