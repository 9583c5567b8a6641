"""`attnkit train recommend`: train SASRec, select by validation NDCG@10, report test metrics."""

from __future__ import annotations

import torch

from attnkit.data.interactions import leave_one_out, read_interactions
from attnkit.engine import Trainer, load_weights
from attnkit.errors import DataError
from attnkit.models.sasrec import SASRec
from attnkit.tasks.recommend.data import eval_set, load_interactions, save_interactions, train_batches
from attnkit.tasks.recommend.objective import report
from attnkit.tasks.rundir import RunStart, run_config, write_metrics, write_new_run


def train_run(start: RunStart) -> dict[str, float]:
    """`attnkit train recommend`: train SASRec, select by validation NDCG@10, report test metrics."""
    where, run_dir, options, train_config, _, log, resume = start
    if resume:
        data = load_interactions(run_dir)
    else:
        data = read_interactions(options.data, min_count=options.min_count, duplicates=options.duplicates)
    for note in data.notes:
        log(f"note: {data.source}: {note}")
    split = leave_one_out(data.sequences)
    model_config = options.model_config(data.n_items)
    train_data, n_train = train_batches(
        split, options.max_len, train_config.batch_size, train_config.seed, length_buckets=options.length_buckets
    )
    valid = eval_set(split, "valid", data.n_items, options.max_len, options.negatives, options.eval_seed)
    test = eval_set(split, "test", data.n_items, options.max_len, options.negatives, options.eval_seed)
    if not valid.users:
        raise DataError(f"{data.source}: no user has the 3 interactions a leave-one-out split needs")
    if not n_train:
        raise DataError(f"{data.source}: no user has the 4 interactions training needs (2 before validation and test)")
    if not resume:
        config = run_config("recommend", options, model_config, train_config)
        write_new_run(run_dir, where, config, files=lambda directory: save_interactions(directory, data))
    log(
        f"data: {len(data.sequences):,} users, {data.n_items:,} items, {data.n_interactions:,} interactions; "
        f"{n_train:,} users train, {len(valid.users):,} evaluated"
        + (f", {split.too_short:,} with fewer than 3 items kept in training only" if split.too_short else "")
    )
    train_config = train_config.averaging(options.average_last)
    torch.manual_seed(train_config.seed)
    model = SASRec(model_config)
    unseen = ", seen items left out of the softmax" if options.exclude_seen else ""
    log(f"model: SASRec, {sum(p.numel() for p in model.parameters()):,} parameters, loss {options.loss}{unseen}")
    task = options.task(data.n_items)
    trainer = Trainer(
        model, task, train_config, run_dir, train_data, valid.batches(options.eval_batch_size), where, log=log
    )
    trainer.fit(resume=resume)
    load_weights(model, run_dir / "model.safetensors")
    if options.average_last > 1:
        trainer.keep_average(options.average_last, trainer.validation_score)
    metrics = trainer.evaluate(test.batches(options.eval_batch_size))
    if not where.is_main:
        return {}
    write_metrics(run_dir, metrics)
    report(metrics, "test", data.n_items, options.negatives, options.eval_seed, log)
    return metrics
