"""`attnkit train translate`: train, average the last checkpoints, translate and score the test set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnkit.data.bpe_dropout import BPEDropout
from attnkit.data.marian_tokenizer import FILES as MARIAN_FILES
from attnkit.data.marian_tokenizer import MarianTokenizer
from attnkit.data.parallel import ParallelTexts, drop_empty
from attnkit.data.readers import read_lines
from attnkit.data.tokenizer import PAD_ID, load_tokenizer, train_tokenizer
from attnkit.engine import Trainer, load_weights
from attnkit.errors import DataError, UserError
from attnkit.models import TransformerConfig, Translator
from attnkit.tasks.adapters import HiddenForward
from attnkit.tasks.rundir import RunStart, copy_files, read_init_run, run_config, write_new_run
from attnkit.tasks.translate.data import BOS_ID, EOS_ID, Specials, encode_pairs, read_split, resolve_dataset
from attnkit.tasks.translate.objective import TranslateTask
from attnkit.tasks.translate.options import TranslateOptions
from attnkit.tasks.translate.run import TranslatorRun


@dataclass(frozen=True)
class InitialRun:
    """The translate run that `--init` fine-tunes: its directory, config.json and model configuration,
    and the new run's options with the model's, tokenizer's and decoding fields taken from it."""

    run_dir: Path
    config: dict[str, Any]
    model_config: TransformerConfig
    options: TranslateOptions

    @classmethod
    def read(cls, options: TranslateOptions) -> InitialRun:
        wanted = "a translate run (e.g. an imported Marian)"
        init_dir, config, theirs = read_init_run(options.init, "translate", wanted, TranslateOptions)
        model_config = TransformerConfig.from_dict(config["model"])
        kept = {f: getattr(theirs, f) for f in _KEPT}
        # sentences are cut to the model's positions (extra_len of them are an output's allowance)
        kept["max_len"] = min(options.max_len, theirs.max_len)
        return cls(init_dir, config, model_config, dataclasses.replace(options, **kept))


# What a fine-tuned run keeps of the run it starts from: the model, the vocabulary, how it decodes.
_KEPT = (
    "vocab_size", "tokenizer_file", "d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "d_ff",
    "dropout", "attention_dropout", "norm_first", "beam", "alpha", "length_penalty", "extra_len",
    "src_lang", "tgt_lang",
)  # fmt: skip


def run_tokenizer(run_dir: Path, config: dict[str, Any]) -> tuple[Any, Specials]:
    """A translate run's tokenizer (tokenizer.json, or an imported Marian's SentencePiece models) and
    the ids that start, end and pad its sentences."""
    if (run_dir / "tokenizer.json").is_file():
        tokenizer: Any = load_tokenizer(run_dir / "tokenizer.json")
    else:
        tokenizer = MarianTokenizer(run_dir)
    marks = config.get("specials") or {}
    pad = config["model"].get("pad_id", PAD_ID)
    return tokenizer, Specials(marks.get("bos", BOS_ID), marks.get("eos", EOS_ID), pad)


def train_run(start: RunStart) -> dict[str, float]:
    """`attnkit train translate`: train, average the last checkpoints, translate and score the test set."""
    where, run_dir, options, train_config, saved, log, resume = start
    init = None if resume or not options.init else InitialRun.read(options)
    if init is not None:
        options = init.options
    options = resolve_dataset(options)
    train_pairs = read_split(options, "train")
    train_pairs, dropped = drop_empty(train_pairs)
    if dropped:
        log(f"note: dropped {dropped} training pairs with an empty side")
    valid_pairs = read_split(options, "valid")
    if valid_pairs is None:
        if len(train_pairs) <= options.valid_size:
            raise DataError(f"too few training pairs ({len(train_pairs)}) to hold out {options.valid_size}")
        held = options.valid_size
        valid_pairs = ParallelTexts(train_pairs.src[-held:], train_pairs.tgt[-held:])
        train_pairs = ParallelTexts(train_pairs.src[:-held], train_pairs.tgt[:-held])
        log(f"validation: held out the last {held} training pairs")
    test_pairs = read_split(options, "test")
    specials = Specials()
    if saved is not None or init is not None:
        source = run_dir if saved is not None else init.run_dir
        tokenizer, specials = run_tokenizer(source, saved if saved is not None else init.config)
    elif options.tokenizer_file:
        tokenizer = load_tokenizer(options.tokenizer_file)
    else:
        tokenizer = train_tokenizer(train_pairs.src + train_pairs.tgt, kind="bytebpe", vocab_size=options.vocab_size)
    if options.bpe_dropout > 0 and isinstance(tokenizer, MarianTokenizer):
        raise UserError("--bpe-dropout segments with attnkit's BPE tokenizer, not a Marian run's SentencePiece")
    dropout = BPEDropout(tokenizer, options.bpe_dropout) if options.bpe_dropout > 0 else None
    if saved is not None:
        config, model_config = saved, TransformerConfig.from_dict(saved["model"])
    elif init is not None:
        model_config = init.model_config
        extra = {"specials": init.config["specials"]} if "specials" in init.config else {}
        config = run_config("translate", options, model_config, train_config, **extra)
    else:
        model_config = options.model_config(tokenizer.get_vocab_size())
        config = run_config("translate", options, model_config, train_config)
    if not resume:
        if isinstance(tokenizer, MarianTokenizer):
            write_new_run(run_dir, where, config, files=copy_files(init.run_dir, MARIAN_FILES))
        else:
            write_new_run(run_dir, where, config, tokenizer=tokenizer)
    encoded = {"train": encode_pairs(tokenizer, train_pairs, options.max_len, dropout=dropout, specials=specials)}
    encoded["valid"] = encode_pairs(tokenizer, valid_pairs, options.max_len, specials=specials)
    truncated = encoded["train"].truncated + encoded["valid"].truncated
    if truncated:
        log(f"warning: {truncated} sentences are longer than max_len={options.max_len} tokens and were truncated")
    log(
        f"data: {len(train_pairs):,} train / {len(valid_pairs):,} validation / "
        f"{len(test_pairs) if test_pairs else 0:,} test pairs; joint vocabulary {tokenizer.get_vocab_size():,}"
    )
    torch.manual_seed(train_config.seed)
    model = Translator(model_config, bos_id=specials.bos, eos_id=specials.eos)
    if init is not None:
        load_weights(model, init.run_dir / "model.safetensors")
        log(f"model: Translator, {model.num_parameters():,} parameters, from {init.run_dir}")
    else:
        log(f"model: Translator, {model.num_parameters():,} parameters")
    train_config = train_config.averaging(options.average_last)
    trainer = Trainer(
        HiddenForward(model),
        TranslateTask(options.label_smoothing, specials.pad),
        train_config,
        run_dir,
        encoded["train"].batches(options.max_tokens, shuffle=True, seed=train_config.seed),
        encoded["valid"].batches(options.max_tokens, shuffle=False, seed=0),
        where,
        log=log,
    )
    trainer.fit(resume=resume)
    if options.average_last > 1:
        trainer.keep_average(options.average_last)
    else:
        load_weights(model, run_dir / "model.safetensors")
    if not where.is_main:
        return {}
    final = test_pairs if test_pairs is not None else valid_pairs
    name = "test" if test_pairs is not None else "validation"
    ref_tok = read_lines(options.test_ref_tok) if options.test_ref_tok and test_pairs is not None else None
    run = TranslatorRun(run_dir, config, model, where.device)
    return run.evaluate(final.src, final.tgt, ref_tok=ref_tok, split=name, log=log, searches=("greedy", "beam"))
