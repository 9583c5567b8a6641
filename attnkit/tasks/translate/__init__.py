"""Machine translation: the paper's encoder-decoder on parallel text, on the one engine.

Train: read parallel files (or TSV pairs), train one joint byte-level BPE on both sides of the
training data, train a `Translator` with label smoothing and the paper's inverse-square-root
schedule on batches built by token count, average the last k evaluation checkpoints (§6.1), then
translate the test set (else validation) with greedy and beam search and score it with sacreBLEU
(cased, detokenized; signature printed) and chrF, plus lowercased tokenized BLEU against
tokenized references when given (`--test-ref-tok`), labelled as such.

Files: options.py, data.py (splits, ids, token-count batches), objective.py (loss), decoding.py
(greedy and beam search over batches, scoring), train.py, run.py (evaluate and predict from the run).
"""

from attnkit.tasks.base import TaskSpec
from attnkit.tasks.translate.data import BOS_ID, EOS_ID, encode_pairs, encode_sources
from attnkit.tasks.translate.decoding import score, translate_ids
from attnkit.tasks.translate.objective import TranslateTask
from attnkit.tasks.translate.options import TRAIN_DEFAULTS, TranslateOptions
from attnkit.tasks.translate.run import EVALUATE, PREDICT, TranslatorRun
from attnkit.tasks.translate.train import train_run
from attnkit.viz.command import explain_command

HELP = "machine translation with the paper's encoder-decoder"
DESCRIPTION = (
    "Train a Translator on parallel text (joint byte-level BPE, label smoothing, inverse-square-root "
    "schedule, token-count batches), average the last checkpoints, and score greedy and beam-search "
    "translations of the test set with sacreBLEU and chrF. --batch-size is not used: batches hold "
    "--max-tokens tokens."
)
COMMANDS = {"evaluate": EVALUATE, "predict": PREDICT, "explain": explain_command("translate")}
TASK = TaskSpec(
    "translate",
    HELP,
    DESCRIPTION,
    TranslateOptions,
    TRAIN_DEFAULTS,
    train_run,
    TranslatorRun,
    COMMANDS,
    ("loss", "ppl"),
)

train = TASK.train

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "TASK",
    "TRAIN_DEFAULTS",
    "TranslateOptions",
    "TranslateTask",
    "TranslatorRun",
    "encode_pairs",
    "encode_sources",
    "score",
    "train",
    "translate_ids",
]
