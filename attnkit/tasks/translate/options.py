"""The options of `attnkit train translate` and the engine settings it starts from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from attnkit.data.tokenizer import PAD_ID
from attnkit.errors import UserError
from attnkit.nn import TransformerConfig
from attnkit.options import bounds, check_model_options, config_from, model_option


@dataclass(frozen=True, kw_only=True)
class TranslateOptions:
    """Everything `attnkit train translate` takes besides the engine's TrainConfig."""

    out: str = field(default="runs/translate", metadata={"help": "run directory to write"})
    train_src: str | None = field(default=None, metadata={"help": "training source sentences, one per line"})
    train_tgt: str | None = field(default=None, metadata={"help": "training target sentences, line-aligned"})
    valid_src: str | None = field(default=None, metadata={"help": "validation source sentences"})
    valid_tgt: str | None = field(default=None, metadata={"help": "validation target sentences"})
    test_src: str | None = field(default=None, metadata={"help": "test source sentences"})
    test_tgt: str | None = field(default=None, metadata={"help": "test target sentences (references)"})
    test_ref_tok: str | None = field(
        default=None,
        metadata={"help": "lowercased Moses-tokenized test references, for tokenized BLEU as papers report it"},
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "multi30k: its train/val/test_2016_flickr files for --src-lang -> --tgt-lang"},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "the dataset's folder (default $ATTNKIT_DATA/multi30k)"}
    )
    train_pairs: str | None = field(default=None, metadata={"help": "training pairs as TSV (source<TAB>target)"})
    valid_pairs: str | None = field(default=None, metadata={"help": "validation pairs as TSV"})
    test_pairs: str | None = field(default=None, metadata={"help": "test pairs as TSV"})
    src_lang: str = field(default="de", metadata={"help": "source language code (for Moses tokenization)"})
    tgt_lang: str = field(default="en", metadata={"help": "target language code"})
    valid_size: int = field(
        default=500, metadata={**bounds(ge=1), "help": "pairs held out of training when no validation set"}
    )
    vocab_size: int = field(default=8000, metadata={**bounds(ge=261), "help": "joint byte-level BPE vocabulary"})
    tokenizer_file: str | None = field(default=None, metadata={"help": "use this tokenizer.json instead"})
    bpe_dropout: float = field(
        default=0.0,
        metadata={
            "help": "BPE-dropout (Provilkov et al. 2020): skip each merge with this probability when segmenting"
            " training sentences, afresh for every batch (the paper: 0.1; 0 = off); evaluation keeps plain BPE"
        },
    )
    max_len: int = field(default=128, metadata={"help": "tokens per sentence; longer ones are truncated"})
    d_model: int = field(default=256, metadata={"help": "model width"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    n_encoder_layers: int = field(default=3, metadata={"help": "encoder layers"})
    n_decoder_layers: int = field(default=3, metadata={"help": "decoder layers"})
    d_ff: int = field(default=1024, metadata={"help": "feed-forward width"})
    dropout: float = model_option(TransformerConfig, "dropout", "dropout (the paper: 0.1)")
    attention_dropout: float = model_option(TransformerConfig, "attention_dropout", "dropout on attention weights")
    norm_first: bool = model_option(TransformerConfig, "norm_first", "pre-norm (the paper is post-norm)")
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing ε (the paper: 0.1)"})
    max_tokens: int = field(
        default=4096, metadata={**bounds(ge=16), "help": "source + target tokens per batch, padding included"}
    )
    average_last: int = field(default=5, metadata={"help": "average the last k evaluation checkpoints (1 = off)"})
    beam: int = field(default=4, metadata={"help": "beam size of the final evaluation (the paper: 4)"})
    alpha: float = field(default=0.6, metadata={"help": "length penalty α (the paper: 0.6)"})
    length_penalty: Literal["gnmt", "length"] = field(
        default="gnmt",
        metadata={
            "help": "beam search's lp(Y): gnmt ((5 + |Y|) / 6)^α (the paper's), or length |Y|^α (transformers' "
            "beam search, as imported Marian runs use)"
        },
    )
    extra_len: int = field(
        default=50, metadata={**bounds(ge=0), "help": "longest output = source length + this (the paper: 50)"}
    )
    init: str | None = field(
        default=None,
        metadata={
            "help": "fine-tune this translate run (e.g. an imported Marian): its model, tokenizer and decoding "
            "settings (those options are taken from it; --max-len at most the run's)"
        },
    )

    def __post_init__(self) -> None:
        if sum(self._training_data()) > 1:
            raise UserError("give --train-src FILE --train-tgt FILE, --train-pairs FILE, or --dataset multi30k")
        if self.dataset and self.dataset != "multi30k":
            raise UserError(f"unknown dataset {self.dataset!r}: translate knows multi30k")
        for side in ("train", "valid", "test"):
            src, tgt = getattr(self, f"{side}_src"), getattr(self, f"{side}_tgt")
            if bool(src) != bool(tgt):
                raise UserError(f"--{side}-src and --{side}-tgt go together")
        if self.max_len < 4:
            raise UserError(f"--max-len must be at least 4, got {self.max_len}")
        if self.beam < 1 or self.average_last < 1:
            raise UserError("--beam and --average-last must be at least 1")
        if self.alpha < 0:
            raise UserError(f"--alpha must be at least 0, got {self.alpha}")
        if not 0 <= self.bpe_dropout < 1:
            raise UserError(f"--bpe-dropout must be in [0, 1), got {self.bpe_dropout}")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        check_model_options(lambda: self.model_config(vocab_size=16))

    def _training_data(self) -> list[bool]:
        return [bool(self.train_src or self.train_tgt), bool(self.train_pairs), bool(self.dataset)]

    def check_training(self) -> None:
        """What training needs besides valid values (an imported run has no data of its own)."""
        if sum(self._training_data()) != 1:
            raise UserError("give --train-src FILE --train-tgt FILE, --train-pairs FILE, or --dataset multi30k")

    def model_config(self, vocab_size: int) -> TransformerConfig:
        """The encoder-decoder these options describe, over one joint vocabulary of `vocab_size` tokens;
        its positions cover the longest source (`max_len`) plus the `extra_len` an output may add."""
        return config_from(
            self, TransformerConfig, src_vocab_size=vocab_size, max_len=self.max_len + self.extra_len + 2, pad_id=PAD_ID
        )


TRAIN_DEFAULTS = {
    "metric": "loss",
    "metric_mode": "min",
    "lr": 1e-3,
    "beta2": 0.98,
    "weight_decay": 0.0,
    "schedule": "inverse_sqrt",
    "warmup_steps": 1000,
    "grad_clip": 0.0,
    "epochs": 20,
}
