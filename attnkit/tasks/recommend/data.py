"""SASRec's data: leave-one-out evaluation sets with fixed negatives, training batches, the interactions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attnkit.data.batching import length_bucketed_plan
from attnkit.data.interactions import Interactions, LeaveOneOut
from attnkit.engine import Batches
from attnkit.engine.checkpoint import save_tensors_atomic, write_json_atomic
from attnkit.errors import UserError
from attnkit.tasks.recommend.objective import sample_negatives, seen_matrix


def left_pad(sequences: list[list[int]]) -> Tensor:
    """Pad on the left with 0 so that the most recent item is in the last column: (B, max length)."""
    width = max(1, max(len(s) for s in sequences))
    out = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            out[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
    return out


@dataclass
class EvalSet:
    """Users evaluated on one held-out item each: model inputs, exclusions and fixed negatives."""

    users: list[int]
    inputs: list[list[int]]
    seen: list[list[int]]
    targets: list[int]
    negatives: Tensor  # (U, K_neg)

    def batches(self, batch_size: int) -> Batches:
        plan = length_bucketed_plan([len(x) for x in self.inputs], batch_size, shuffle=False)

        def collate(indices: list[int]) -> dict[str, Tensor]:
            return {
                "input": left_pad([self.inputs[i] for i in indices]),
                "seen": left_pad([self.seen[i] for i in indices]),
                "target": torch.tensor([self.targets[i] for i in indices], dtype=torch.long),
                "negatives": self.negatives[indices],
            }

        return Batches(plan, collate)


def eval_set(split: LeaveOneOut, which: str, n_items: int, max_len: int, negatives: int, seed: int) -> EvalSet:
    """Validation (history = training prefix) or test (history = prefix + validation item) users."""
    users, inputs, seen, targets, train_items = [], [], [], [], []
    for user, prefix in enumerate(split.train):
        target = split.valid_target[user] if which == "valid" else split.test_target[user]
        if target == 0:
            continue
        history = prefix if which == "valid" else [*prefix, split.valid_target[user]]
        users.append(user)
        inputs.append(history[-max_len:])
        seen.append(history)
        targets.append(target)
        train_items.append([*prefix, target])
    generator = torch.Generator().manual_seed(seed)
    drawn = []
    for start in range(0, len(users), 1024):  # chunks bound the dense (users, items) matrix
        chunk = left_pad(train_items[start : start + 1024])
        drawn.append(sample_negatives(seen_matrix(chunk, n_items), negatives, generator))
    stacked = torch.cat(drawn) if drawn else torch.zeros(0, negatives, dtype=torch.long)
    return EvalSet(users, inputs, seen, targets, stacked)


def train_batches(
    split: LeaveOneOut, max_len: int, batch_size: int, seed: int, *, length_buckets: bool = False
) -> tuple[Batches, int]:
    """Every user with two or more training items: inputs prefix[:-1], targets prefix[1:].

    Each epoch visits every user once, in an order fixed by (seed, epoch). With `length_buckets`,
    users are sorted by length within pools of 8 batches, so a batch pads little; without, each
    batch is a random draw of users.
    """
    users = [u for u, prefix in enumerate(split.train) if len(prefix) >= 2]
    plan = length_bucketed_plan(
        [min(len(split.train[u]) - 1, max_len) for u in users],
        batch_size,
        shuffle=True,
        seed=seed,
        pool=8 if length_buckets else 1,  # a pool of one batch sorts only within the batch
    )

    def collate(indices: list[int]) -> dict[str, Tensor]:
        prefixes = [split.train[users[i]] for i in indices]
        return {
            "input": left_pad([p[:-1][-max_len:] for p in prefixes]),
            "target": left_pad([p[1:][-max_len:] for p in prefixes]),
            "history": left_pad(prefixes),
        }

    return Batches(plan, collate), len(users)


def save_interactions(run_dir: Path, data: Interactions) -> None:
    """The run's own copy of the data (ids in safetensors, id mappings in JSON), so that evaluate
    and predict need nothing but the run directory."""
    flat = torch.tensor([item for seq in data.sequences for item in seq], dtype=torch.int32)
    lengths = torch.tensor([len(seq) for seq in data.sequences], dtype=torch.int64)
    save_tensors_atomic({"items": flat, "lengths": lengths}, run_dir / "interactions.safetensors")
    write_json_atomic(run_dir / "ids.json", {"users": data.users, "items": data.items, "source": data.source})


def load_interactions(run_dir: Path) -> Interactions:
    """What `save_interactions` wrote."""
    import json

    from safetensors.torch import load_file

    try:
        tensors = load_file(str(run_dir / "interactions.safetensors"))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise UserError(
            f"{run_dir / 'interactions.safetensors'}: cannot read the run's interactions ({error})"
        ) from None
    try:
        ids = json.loads((run_dir / "ids.json").read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{run_dir / 'ids.json'}: cannot read the run's ids ({error})") from None
    for key in ("users", "items"):
        if not isinstance(ids, dict) or not isinstance(ids.get(key), list):
            raise UserError(f"{run_dir / 'ids.json'}: missing or malformed {key!r} (a list of ids)")
    if set(tensors) != {"items", "lengths"}:
        raise UserError(f"{run_dir / 'interactions.safetensors'}: expected tensors 'items' and 'lengths'")
    flat, lengths = tensors["items"].tolist(), tensors["lengths"].tolist()
    if sum(lengths) != len(flat) or len(lengths) != len(ids["users"]):
        raise UserError(f"{run_dir}: interactions.safetensors and ids.json do not agree (users or item counts)")
    sequences, start = [], 0
    for length in lengths:
        sequences.append(flat[start : start + length])
        start += length
    return Interactions(sequences, ids["users"], ids["items"], ids.get("source", ""))
