"""`attnkit train translate`: train, average the last checkpoints, translate and score the test set."""

from __future__ import annotations

import torch

from attnkit.data.bpe_dropout import BPEDropout
from attnkit.data.parallel import ParallelTexts, drop_empty
from attnkit.data.readers import read_lines
from attnkit.data.tokenizer import load_tokenizer, train_tokenizer
from attnkit.engine import Trainer, load_weights
from attnkit.errors import DataError
from attnkit.models import Translator
from attnkit.tasks.adapters import HiddenForward
from attnkit.tasks.rundir import RunStart, run_config, write_new_run
from attnkit.tasks.translate.data import BOS_ID, EOS_ID, encode_pairs, read_split, resolve_dataset
from attnkit.tasks.translate.objective import TranslateTask
from attnkit.tasks.translate.run import TranslatorRun


def train_run(start: RunStart) -> dict[str, float]:
    """`attnkit train translate`: train, average the last checkpoints, translate and score the test set."""
    where, run_dir, options, train_config, saved, log, resume = start
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
    if saved is not None:
        tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    elif options.tokenizer_file:
        tokenizer = load_tokenizer(options.tokenizer_file)
    else:
        tokenizer = train_tokenizer(train_pairs.src + train_pairs.tgt, kind="bytebpe", vocab_size=options.vocab_size)
    dropout = BPEDropout(tokenizer, options.bpe_dropout) if options.bpe_dropout > 0 else None
    model_config = options.model_config(tokenizer.get_vocab_size())
    config = saved if saved is not None else run_config("translate", options, model_config, train_config)
    if not resume:
        write_new_run(run_dir, where, config, tokenizer=tokenizer)
    encoded = {"train": encode_pairs(tokenizer, train_pairs, options.max_len, dropout=dropout)}
    encoded["valid"] = encode_pairs(tokenizer, valid_pairs, options.max_len)
    truncated = encoded["train"].truncated + encoded["valid"].truncated
    if truncated:
        log(f"warning: {truncated} sentences are longer than max_len={options.max_len} tokens and were truncated")
    log(
        f"data: {len(train_pairs):,} train / {len(valid_pairs):,} validation / "
        f"{len(test_pairs) if test_pairs else 0:,} test pairs; joint vocabulary {tokenizer.get_vocab_size():,}"
    )
    torch.manual_seed(train_config.seed)
    model = Translator(model_config, bos_id=BOS_ID, eos_id=EOS_ID)
    log(f"model: Translator, {model.num_parameters():,} parameters")
    train_config = train_config.averaging(options.average_last)
    trainer = Trainer(
        HiddenForward(model),
        TranslateTask(options.label_smoothing),
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
