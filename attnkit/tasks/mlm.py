"""Masked-language-model pre-training of a text encoder (BERT, Devlin et al. 2019), on the one engine.

Texts (one document per line of a plain-text file, or a dataset's unlabelled stories) are cut into
pieces of at most `max_len` tokens; 15% of the tokens are chosen, of which 80% become [MASK], 10% a
random token and 10% stay, and the model predicts the chosen ones. A classification run starts
from the result with `attnkit train classify --init RUN_DIR`, reusing its tokenizer and encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.batching import length_bucketed_plan, pad
from attnkit.data.readers import read_lines
from attnkit.data.tokenizer import CLS_ID, MASK_ID, PAD_ID, encode_texts, load_tokenizer, train_tokenizer
from attnkit.engine import Batches, Dist, Trainer
from attnkit.engine.evaluation import collect
from attnkit.errors import DataError, UserError
from attnkit.models import MaskedLanguageModel, TextEncoderConfig
from attnkit.options import bounds
from attnkit.tasks.base import Run, TaskSpec, metrics_command, random_ids
from attnkit.tasks.encoder_options import EncoderOptions
from attnkit.tasks.io import standard_dataset
from attnkit.tasks.rundir import RunStart, run_config, write_metrics, write_new_run
from attnkit.viz.command import explain_command

N_SPECIAL = 5


@dataclass(frozen=True, kw_only=True)
class MlmOptions(EncoderOptions):
    """Everything `attnkit train mlm` takes besides the engine's TrainConfig."""

    out: str = field(default="runs/mlm", metadata={"help": "run directory to write"})
    text: str | None = field(default=None, metadata={"help": "plain-text file, one document per line (.gz ok)"})
    dataset: str | None = field(
        default=None,
        metadata={"help": "use a classification dataset's unlabelled text (never its test split): reuters_r8, ..."},
    )
    data_dir: str | None = field(default=None, metadata={"help": "the dataset's folder"})
    valid_fraction: float = field(default=0.02, metadata={**bounds(gt=0, lt=1), "help": "share of documents held out"})
    mask_prob: float = field(default=0.15, metadata={"help": "share of tokens to predict"})

    def __post_init__(self) -> None:
        self.check_encoder()
        if self.text and self.dataset:
            raise UserError("give either --text FILE or --dataset NAME")
        if not 0 < self.mask_prob < 1:
            raise UserError(f"--mask-prob must be between 0 and 1, got {self.mask_prob}")

    def check_training(self) -> None:
        """What training needs besides valid values (an imported run has no text of its own)."""
        if not (self.text or self.dataset):
            raise UserError("give either --text FILE or --dataset NAME")


TRAIN_DEFAULTS = {"metric": "loss", "metric_mode": "min", "lr": 5e-4, "epochs": 5, "batch_size": 32}


def mask_tokens(
    ids: Tensor,
    vocab_size: int,
    mask_prob: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking of a padded batch (B, L): returns (inputs, targets with -100 where not chosen)."""
    real = (ids != PAD_ID) & (ids != CLS_ID)
    chosen = (torch.rand(ids.shape, generator=generator) < mask_prob) & real
    targets = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = MASK_ID
    random_tokens = torch.randint(N_SPECIAL, vocab_size, ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_tokens[swap]
    return inputs, targets


class MlmTask:
    """Loss and metrics of masked-token prediction, for the engine."""

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        chosen = batch["target"] != -100  # (B, L)
        logits = model(batch["ids"], chosen)  # (N, V)
        return F.cross_entropy(logits.float(), batch["target"][chosen]), int((batch["ids"] != PAD_ID).sum())

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        chosen = batch["target"] != -100
        logits = model(batch["ids"], chosen).float()  # (N, V)
        target = batch["target"][chosen]
        return {
            "loss": F.cross_entropy(logits, target, reduction="none"),
            "correct": (logits.argmax(dim=-1) == target).float(),
        }

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        return {"loss": float(rows["loss"].mean()), "masked_accuracy": float(rows["correct"].mean())}


def read_documents(options: MlmOptions, where: Dist | None = None, log: Any = print) -> list[str]:
    """The documents to pre-train on; a missing standard dataset is downloaded by rank 0 first."""
    if options.dataset:
        splits = standard_dataset(options.dataset, options.data_dir, where, log)
        if not splits.unlabeled:
            raise DataError(f"dataset {options.dataset} has no unlabelled text; use --text FILE")
        return splits.unlabeled
    docs = [line.strip() for line in read_lines(options.text) if line.strip()]
    if not docs:
        raise DataError(f"{options.text}: the file is empty")
    return docs


def split_documents(docs: list[str], valid_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """The training and held-out documents: a `seed`-fixed shuffle, at least one held out."""
    order = np.random.default_rng(seed).permutation(len(docs))
    n_valid = max(1, int(len(docs) * valid_fraction))
    return [docs[i] for i in order[n_valid:]], [docs[i] for i in order[:n_valid]]


def validation_batches(valid_ids: list[list[int]], vocab_size: int, mask_prob: float, batch_size: int) -> Batches:
    """Held-out pieces by length, each batch masked the same way every time it is evaluated."""

    def collate(indices: list[int]) -> dict[str, Tensor]:
        fixed = torch.Generator().manual_seed(int(indices[0]) * 1_000_003 + len(indices))
        inputs, targets = mask_tokens(pad([valid_ids[i] for i in indices]), vocab_size, mask_prob, fixed)
        return {"ids": inputs, "target": targets}

    return Batches(length_bucketed_plan([len(x) for x in valid_ids], batch_size, shuffle=False), collate)


def pieces(tokenizer: Any, docs: list[str], max_len: int) -> list[list[int]]:
    """Each document's ids cut into pieces of max_len - 1 tokens, each led by [CLS]."""
    out = []
    for encoding in tokenizer.encode_batch(docs, add_special_tokens=False):
        ids = encoding.ids
        for start in range(0, max(len(ids), 1), max_len - 1):
            piece = ids[start : start + max_len - 1]
            if len(piece) >= 8 or start == 0:
                out.append([CLS_ID, *piece])
    return out


def train_run(start: RunStart) -> dict[str, float]:
    """`attnkit train mlm`: pre-train an encoder; its run can seed `train classify --init`."""
    where, run_dir, options, train_config, saved, log, resume = start
    train_docs, valid_docs = split_documents(
        read_documents(options, where, log), options.valid_fraction, train_config.seed
    )
    if resume:
        tokenizer = load_tokenizer(run_dir / "tokenizer.json")
        config = TextEncoderConfig.from_dict(saved["model"])
    else:
        tokenizer = train_tokenizer(
            train_docs, kind=options.tokenizer, vocab_size=options.vocab_size, lowercase=options.lowercase
        )
        config = options.encoder_config(tokenizer.get_vocab_size())
        write_new_run(run_dir, where, run_config("mlm", options, config, train_config), tokenizer=tokenizer)
    train_ids, valid_ids = (
        pieces(tokenizer, train_docs, options.max_len),
        pieces(tokenizer, valid_docs, options.max_len),
    )
    log(
        f"data: {len(train_docs)} documents -> {len(train_ids)} pieces "
        f"({sum(map(len, train_ids)):,} tokens); {len(valid_ids)} validation pieces"
    )
    vocab = config.vocab_size

    def train_collate(indices: list[int]) -> dict[str, Tensor]:
        inputs, targets = mask_tokens(pad([train_ids[i] for i in indices]), vocab, options.mask_prob)
        return {"ids": inputs, "target": targets}

    torch.manual_seed(train_config.seed)
    model = MaskedLanguageModel(config)
    log(f"model: MaskedLanguageModel, {sum(p.numel() for p in model.parameters()):,} parameters")
    trainer = Trainer(
        model,
        MlmTask(),
        train_config,
        run_dir,
        Batches(
            length_bucketed_plan(
                [len(x) for x in train_ids], train_config.batch_size, shuffle=True, seed=train_config.seed
            ),
            train_collate,
        ),
        validation_batches(valid_ids, vocab, options.mask_prob, train_config.batch_size),
        where,
        log=log,
    )
    best = trainer.fit(resume=resume)
    metrics = {k: v for k, v in best.items() if k.startswith("val_")}
    if where.is_main:
        write_metrics(run_dir, metrics)
    return metrics


class MlmRun(Run, task="mlm", options=MlmOptions, model=MaskedLanguageModel, config=TextEncoderConfig):
    """A pre-trained `MaskedLanguageModel` with its tokenizer: fills in [MASK] tokens."""

    options: MlmOptions

    def setup(self) -> None:
        self.tokenizer = load_tokenizer(self.run_dir / "tokenizer.json")
        found = self.tokenizer.token_to_id("[MASK]")  # an imported BERT's tokenizer has its own ids
        self.mask_id = MASK_ID if found is None else found

    def encode(self, inputs: list[str]) -> dict[str, Tensor]:
        """Texts (with [MASK] where a token is to be filled) -> {"ids": (B, L)}, [CLS] first, cut to max_len."""
        return {"ids": pad(encode_texts(self.tokenizer, inputs, self.options.max_len).ids, PAD_ID).to(self.device)}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Token logits (B, L, V) at every position."""
        ids = batch["ids"]
        with torch.no_grad():
            return self.model(ids, torch.ones_like(ids, dtype=torch.bool)).view(*ids.shape, -1)

    def evaluate(self, log: Any = print) -> dict[str, float]:
        """Masked-token loss and accuracy on the held-out documents (the split and masks of training)."""
        seed = int(self.config.get("train", {}).get("seed", 0))
        _, valid_docs = split_documents(read_documents(self.options, log=log), self.options.valid_fraction, seed)
        valid_ids = pieces(self.tokenizer, valid_docs, self.options.max_len)
        data = validation_batches(valid_ids, int(self.config["model"]["vocab_size"]), self.options.mask_prob, 32)
        task = MlmTask()
        metrics = task.metrics(
            collect(lambda batch: task.eval_step(self.model, batch), data.plan(0), data.collate, self.device)
        )
        result = {"val_loss": metrics["loss"], "val_masked_accuracy": metrics["masked_accuracy"]}
        write_metrics(self.run_dir, result)
        log(f"validation: masked-token loss {result['val_loss']:.4f}  accuracy {result['val_masked_accuracy']:.4f}")
        return result

    def export_spec(self) -> dict[str, Any]:
        return {
            "length": self.model.body.config.max_len,
            "axes": {"ids": "length"},
            "output": "logits",
            "meaning": "token logits (batch, length, vocabulary)",
        }

    def example_batch(self, batch_size: int, length: int) -> dict[str, Tensor]:
        config = self.model.body.config
        return {"ids": random_ids(batch_size, length, 5, config.vocab_size, config.pad_id)}

    record_options: ClassVar[dict[str, type]] = {"top_k": int}

    def records(self, inputs: list[str], top_k: int = 5) -> list[dict[str, Any]]:
        """Per text: {"text", "fills"}: for each [MASK], the `top_k` likeliest {"token", "probability"}."""
        if top_k < 1:
            raise UserError("top_k must be at least 1")
        found = self.predict(inputs, top_k)
        return [
            {"text": text, "fills": [[{"token": t, "probability": p} for t, p in mask] for mask in masks]}
            for text, masks in zip(inputs, found, strict=True)
        ]

    def predict(self, inputs: list[str], top_k: int = 5, batch_size: int = 32) -> list[list[list[tuple[str, float]]]]:
        """For each text, for each [MASK] in it (in order), the `top_k` likeliest tokens with their probabilities.

        Texts go through the model `batch_size` at a time, sorted by length: the logits of a batch are
        (B, L, V), and all of a large input file at once would not fit in memory."""
        encoded = encode_texts(self.tokenizer, inputs, self.options.max_len).ids
        found: list[list[list[tuple[str, float]]]] = [[] for _ in inputs]
        for indices in length_bucketed_plan([len(x) for x in encoded], batch_size, shuffle=False)(0):
            ids = pad([encoded[i] for i in indices], PAD_ID).to(self.device)
            for i, masks in zip(indices, self.fills(ids, self.forward({"ids": ids}), top_k), strict=True):
                found[i] = masks
        return found

    def fills(self, ids: Tensor, logits: Tensor, top_k: int = 5) -> list[list[list[tuple[str, float]]]]:
        """`predict`'s answer from ids (B, L) and the model's logits (B, L, V) for them."""
        out = []
        for row in range(ids.size(0)):
            masks = (ids[row] == self.mask_id).nonzero().flatten().tolist()
            probs = logits[row, masks].float().softmax(dim=-1)  # (M, V): the masked positions only
            values, indices = probs.topk(min(top_k, probs.size(-1)), dim=-1) if masks else (None, None)
            out.append(
                [
                    [(self.tokenizer.id_to_token(int(i)), float(v)) for v, i in zip(vs, ix, strict=True)]
                    for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
                ]
                if masks
                else []
            )
        return out


HELP = "masked-language-model pre-training of a text encoder"
DESCRIPTION = (
    "Pre-train a text encoder as a masked language model on unlabelled text; start a classifier from "
    "it with `attnkit train classify --init RUN_DIR`."
)
COMMANDS = {
    "evaluate": metrics_command("mlm: masked-token loss and accuracy on the held-out documents."),
    "explain": explain_command("mlm"),
}
TASK = TaskSpec(
    "mlm", HELP, DESCRIPTION, MlmOptions, TRAIN_DEFAULTS, train_run, MlmRun, COMMANDS, ("loss", "masked_accuracy")
)
train = TASK.train
