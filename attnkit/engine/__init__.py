"""attnkit.engine: the one model-agnostic training loop, checkpoints and distributed set-up."""

from attnkit.engine.checkpoint import CheckpointError, load_weights, save_weights_atomic, unwrap
from attnkit.engine.config import TrainConfig
from attnkit.engine.distributed import Dist, setup, teardown
from attnkit.engine.trainer import Batches, Task, Trainer

__all__ = [
    "Batches",
    "CheckpointError",
    "Dist",
    "Task",
    "TrainConfig",
    "Trainer",
    "load_weights",
    "save_weights_atomic",
    "setup",
    "teardown",
    "unwrap",
]
