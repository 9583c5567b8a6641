"""News (text) classification: a Transformer encoder trained on labelled texts, on the one engine.

Train (`train.py`): read the splits (`data.py`: files or a standard dataset), hold out a stratified
validation slice when none is given, train a tokenizer on the training texts only, train a
`TextClassifier` with the engine (`objective.py`: the loss and metrics), then evaluate the best
checkpoint on the test split (else validation) and write metrics.json and confusion.png
(`report.py`). Evaluate and predict work from the run directory alone (`run.py`).
"""

from attnkit.tasks.base import TaskSpec
from attnkit.tasks.classify.data import read_splits, stratified_split
from attnkit.tasks.classify.objective import ClassifyTask, MultiLabelTask
from attnkit.tasks.classify.options import TRAIN_DEFAULTS, ClassifyOptions
from attnkit.tasks.classify.run import EVALUATE, PREDICT, ClassifierRun
from attnkit.tasks.classify.train import load_encoder, train_run
from attnkit.viz.command import explain_command

HELP = "text classification with a Transformer encoder"
DESCRIPTION = (
    "Train a TextClassifier on labelled texts (files or a standard dataset), keep the best checkpoint "
    "by validation accuracy, and report test metrics."
)
COMMANDS = {"evaluate": EVALUATE, "predict": PREDICT, "explain": explain_command("classify")}
TASK = TaskSpec(
    "classify",
    HELP,
    DESCRIPTION,
    ClassifyOptions,
    TRAIN_DEFAULTS,
    train_run,
    ClassifierRun,
    COMMANDS,
    ("accuracy", "macro_f1", "micro_f1", "loss"),
)

train = TASK.train

__all__ = [
    "TASK",
    "TRAIN_DEFAULTS",
    "ClassifierRun",
    "ClassifyOptions",
    "ClassifyTask",
    "MultiLabelTask",
    "load_encoder",
    "read_splits",
    "stratified_split",
    "train",
]
