"""The options of `attnkit train classify` and the engine settings it starts from."""

from __future__ import annotations

from dataclasses import dataclass, field

from attnkit.data.datasets import MULTI_LABEL
from attnkit.errors import UserError
from attnkit.tasks.encoder_options import EncoderOptions


@dataclass(frozen=True, kw_only=True)
class ClassifyOptions(EncoderOptions):
    """Everything `attnkit train classify` takes besides the engine's TrainConfig."""

    out: str = field(default="runs/classify", metadata={"help": "run directory to write"})
    train: str | None = field(default=None, metadata={"help": "training file (.csv/.tsv/.txt/.jsonl[.gz])"})
    valid: str | None = field(
        default=None, metadata={"help": "validation file (default: a stratified slice of --train)"}
    )
    test: str | None = field(default=None, metadata={"help": "test file"})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "standard dataset instead of files: reuters_r8, reuters_r52, reuters_90 (multi-label), "
            "ag_news, thucnews_title"
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "the dataset's folder (default $ATTNKIT_DATA/<folder>)"}
    )
    text_columns: str | None = field(
        default=None,
        metadata={"help": "comma-separated text columns, joined (names with a header, else 0-based indices)"},
    )
    label_column: str | None = field(
        default=None, metadata={"help": "label column (default: 'label' or the last column)"}
    )
    class_names: str | None = field(default=None, metadata={"help": "file of class names, line i = label i"})
    valid_fraction: float = field(
        default=0.1,
        metadata={
            "help": "share of --train held out for validation; 0 = none: train on all of it and keep the last "
            "weights (the average of the last --average-last epochs)"
        },
    )
    tokenizer_file: str | None = field(
        default=None,
        metadata={
            "help": "use this tokenizer.json instead of training one (training breaks frequency ties "
            "differently from one process to the next, so a shared file makes runs repeatable)"
        },
    )
    pooling: str = field(
        default="mean",
        metadata={"help": "mean (masked), cls, or pooler (BERT's dense + tanh on [CLS], e.g. after --init an import)"},
    )
    init: str | None = field(
        default=None,
        metadata={"help": "start from the encoder of this run (e.g. an `attnkit train mlm` run)"},
    )
    multi_label: bool = field(
        default=False,
        metadata={
            "help": "each text has a set of labels, joined by --label-separator in the label column: one "
            "sigmoid per class, micro/macro-F1 (on by itself for reuters_90)"
        },
    )
    label_separator: str = field(default="|", metadata={"help": "separates the labels of a multi-label example"})
    average_last: int = field(
        default=1,
        metadata={
            "help": "average the weights of the last k evaluations and keep the average if it scores at least "
            "as well on validation as the best checkpoint (1 = off)"
        },
    )
    threshold: float = field(
        default=0.5, metadata={"help": "multi-label: a class is predicted when its probability reaches this"}
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "single-label: spread this much of each target's probability over all classes"}
    )
    token_dropout: float = field(
        default=0.0,
        metadata={"help": "in training, remove each token (but the first) of a text with this probability"},
    )

    def __post_init__(self) -> None:
        self.check_encoder()
        if self.train and self.dataset:
            raise UserError("give either --train or --dataset, not both")
        if not 0 <= self.valid_fraction < 1:
            raise UserError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}")
        if self.max_len < 2:
            raise UserError(f"--max-len must be at least 2, got {self.max_len}")
        if self.pooling not in ("mean", "cls", "pooler"):
            raise UserError(f"--pooling must be mean, cls or pooler, got {self.pooling!r}")
        if not 0 < self.threshold < 1:
            raise UserError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.token_dropout < 1:
            raise UserError(f"--token-dropout must be in [0, 1), got {self.token_dropout}")
        if self.average_last < 1:
            raise UserError(f"--average-last must be at least 1, got {self.average_last}")
        if not self.label_separator:
            raise UserError("--label-separator must not be empty")
        if self.dataset in MULTI_LABEL:
            object.__setattr__(self, "multi_label", True)

    def check_training(self) -> None:
        """What training needs besides valid values (an imported run has no data of its own)."""
        if not (self.train or self.dataset):
            raise UserError("give --train FILE or --dataset NAME")

    def label_set(self, label: str) -> list[str]:
        """The classes of one example: its label, or with --multi-label the separated labels."""
        if not self.multi_label:
            return [label]
        return sorted({part.strip() for part in label.split(self.label_separator) if part.strip()})


TRAIN_DEFAULTS = {"metric": "accuracy", "metric_mode": "max", "lr": 5e-4, "epochs": 10, "batch_size": 32}
