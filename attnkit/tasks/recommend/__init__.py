"""Sequential recommendation: SASRec trained on users' item histories, on the one engine.

Train: read interactions, split leave-one-out (last item test, second-to-last validation), train
`SASRec` to predict each next item of the training prefix, keep the best checkpoint by validation
NDCG@10, and evaluate it on the test items under both protocols:
- sampled (the paper's): the held-out item ranked among 100 negatives drawn uniformly, with
  replacement, from the items outside the user's training history (as the reference code does;
  for the test item the validation item may be drawn), with a fixed seed; every user evaluated;
- full: ranked among all items except those already in the user's history.
Evaluation is batched: one matrix product scores every item for a batch of users.

Files: options.py, objective.py (loss, ranking metrics), data.py (evaluation sets, batches,
the run's copy of the interactions), train.py, run.py (evaluate and predict from the run).
"""

from attnkit.tasks.base import TaskSpec
from attnkit.tasks.recommend.data import eval_set, left_pad, load_interactions, train_batches
from attnkit.tasks.recommend.objective import (
    K,
    RecommendTask,
    rank_metrics,
    sample_negatives,
    seen_matrix,
    seen_so_far,
)
from attnkit.tasks.recommend.options import TRAIN_DEFAULTS, RecommendOptions
from attnkit.tasks.recommend.run import EVALUATE, PREDICT, RecommenderRun
from attnkit.tasks.recommend.train import train_run
from attnkit.viz.command import explain_command

HELP = "sequential recommendation with SASRec"
DESCRIPTION = (
    "Train SASRec on users' item histories (leave-one-out split), keep the best checkpoint by validation "
    "NDCG@10, and report test HR@10, NDCG@10 and MRR under the sampled (the paper's) and full-ranking protocols."
)
COMMANDS = {"evaluate": EVALUATE, "predict": PREDICT, "explain": explain_command("recommend")}
TASK = TaskSpec(
    "recommend",
    HELP,
    DESCRIPTION,
    RecommendOptions,
    TRAIN_DEFAULTS,
    train_run,
    RecommenderRun,
    COMMANDS,
    tuple(f"{p}_{m}" for p in ("sampled", "full") for m in ("hr@10", "ndcg@10", "mrr")),
)

train = TASK.train

__all__ = [
    "TASK",
    "TRAIN_DEFAULTS",
    "K",
    "RecommendOptions",
    "RecommendTask",
    "RecommenderRun",
    "eval_set",
    "left_pad",
    "load_interactions",
    "rank_metrics",
    "sample_negatives",
    "seen_matrix",
    "seen_so_far",
    "train",
    "train_batches",
]
