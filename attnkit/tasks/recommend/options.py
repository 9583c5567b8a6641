"""The options of `attnkit train recommend` and the engine settings it starts from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from attnkit.errors import UserError
from attnkit.models.sasrec import SASRecConfig, Style
from attnkit.options import bounds, check_model_options, config_from, model_option
from attnkit.tasks.recommend.objective import Loss, RecommendTask

Protocol = Literal["sampled", "full", "both"]


@dataclass(frozen=True, kw_only=True)
class RecommendOptions:
    """Everything `attnkit train recommend` takes besides the engine's TrainConfig."""

    out: str = field(default="runs/recommend", metadata={"help": "run directory to write"})
    data: str | None = field(
        default=None,
        metadata={"help": "interactions: SASRec 'user item' text, user,item[,rating][,timestamp] CSV, or ratings.dat"},
    )
    min_count: int = field(default=0, metadata={**bounds(ge=0), "help": "k-core filter on users and items (0 = off)"})
    duplicates: Literal["error", "drop", "keep"] = field(
        default="error", metadata={"help": "what a repeated interaction line is: error, drop or keep"}
    )
    max_len: int = field(default=200, metadata={"help": "most recent items of a history the model sees"})
    d_model: int = model_option(SASRecConfig, "d_model", "model width d")
    n_heads: int = model_option(SASRecConfig, "n_heads", "attention heads")
    n_layers: int = model_option(SASRecConfig, "n_layers", "self-attention blocks")
    d_ff: int = model_option(SASRecConfig, "d_ff", "feed-forward width (the paper: d)")
    dropout: float = model_option(SASRecConfig, "dropout", "dropout rate")
    attention_dropout: float | None = field(
        default=None,
        metadata={"help": "dropout on the attention weights (None: the --dropout rate, as the reference code)"},
    )
    style: Style = model_option(
        SASRecConfig,
        "style",
        "reference: the authors' blocks and initialisation; attnkit: attnkit.nn's pre-norm Encoder",
    )
    loss: Loss = field(
        default="bce",
        metadata={
            "help": "bce: the paper's, one sampled negative per position; ce: softmax over all items; "
            "ce+bce: ce plus --bce-weight times bce (ce ranks all items, bce pushes uniformly drawn items down)"
        },
    )
    bce_weight: float = field(default=1.0, metadata={"help": "weight of the bce term of --loss ce+bce"})
    exclude_seen: bool = field(
        default=False,
        metadata={
            "help": "ce's softmax at each position leaves out the items already in the history there, which "
            "neither protocol (nor predict) ranks, so the model need not learn to push them down"
        },
    )
    length_buckets: bool = field(
        default=False,
        metadata={
            "help": "batch training users of similar history length together: less padding, faster epochs, "
            "but less learned per epoch (BENCHMARKS.md); off = batches drawn at random, as the reference code"
        },
    )
    average_last: int = field(
        default=1,
        metadata={
            "help": "average the weights of the last k evaluations and keep the average if it scores at least "
            "as well on validation as the best checkpoint (1 = off)"
        },
    )
    negatives: int = field(default=100, metadata={"help": "negatives per user of the sampled protocol"})
    eval_seed: int = field(default=0, metadata={"help": "seed of the sampled protocol's negatives"})
    eval_batch_size: int = field(default=256, metadata={**bounds(ge=1), "help": "users per evaluation batch"})

    # What runs saved before these options existed did (see tasks.rundir.saved_options).
    SAVED_WITHOUT: ClassVar[dict[str, object]] = {"style": "attnkit", "attention_dropout": 0.0, "length_buckets": True}

    def __post_init__(self) -> None:
        if not self.data:
            raise UserError("give --data FILE (interactions)")
        if self.max_len < 1:
            raise UserError(f"--max-len must be at least 1, got {self.max_len}")
        if self.average_last < 1:
            raise UserError(f"--average-last must be at least 1, got {self.average_last}")
        if self.negatives < 1:
            raise UserError(f"--negatives must be at least 1, got {self.negatives}")
        if not self.bce_weight > 0:
            raise UserError(f"--bce-weight must be positive, got {self.bce_weight}")
        if self.bce_weight != 1.0 and self.loss != "ce+bce":
            raise UserError(f"--bce-weight weighs the bce term of --loss ce+bce; the loss is {self.loss}")
        if self.exclude_seen and self.loss == "bce":
            raise UserError("--exclude-seen changes the softmax of --loss ce or ce+bce; bce draws unseen items already")
        check_model_options(lambda: self.model_config(n_items=1))

    def model_config(self, n_items: int) -> SASRecConfig:
        """The SASRec these options describe, over `n_items` items."""
        attention_dropout = self.dropout if self.attention_dropout is None else self.attention_dropout
        return config_from(self, SASRecConfig, n_items=n_items, attention_dropout=attention_dropout)

    def task(self, n_items: int) -> RecommendTask:
        """The loss and metrics these options train and evaluate with, over n_items items."""
        return RecommendTask(self.loss, n_items, self.bce_weight, self.exclude_seen)


TRAIN_DEFAULTS = {
    "metric": "sampled_ndcg@10",
    "metric_mode": "max",
    "lr": 1e-3,
    "beta2": 0.98,
    "weight_decay": 0.0,
    "schedule": "constant",
    "warmup_steps": 0,
    "grad_clip": 0.0,
    "epochs": 200,
    "batch_size": 128,
}
