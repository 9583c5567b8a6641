"""Sequential recommendation: SASRec trained on users' item histories, on the one engine.

Train: read interactions, split leave-one-out (last item test, second-to-last validation), train
`SASRec` to predict each next item of the training prefix, keep the best checkpoint by validation
NDCG@10, and evaluate it on the test items under both protocols:
- sampled (the paper's): the held-out item ranked among 100 negatives drawn uniformly, with
  replacement, from the items outside the user's training history (as the reference code does;
  for the test item the validation item may be drawn), with a fixed seed; every user evaluated;
- full: ranked among all items except those already in the user's history.
Evaluation is batched: one matrix product scores every item for a batch of users.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.batching import length_bucketed_plan
from attnkit.data.interactions import Interactions, LeaveOneOut, leave_one_out, read_interactions, read_item_names
from attnkit.engine import Batches, TrainConfig, Trainer, load_weights, unwrap
from attnkit.engine.checkpoint import save_tensors_atomic, write_json_atomic
from attnkit.errors import DataError, UserError
from attnkit.models.sasrec import SASRec, SASRecConfig, Style
from attnkit.nn import linear_cross_entropy
from attnkit.options import check_model_options
from attnkit.tasks.runs import open_run, saved_options, start_run, write_metrics, write_new_run

Loss = Literal["bce", "ce", "ce+bce"]
Protocol = Literal["sampled", "full", "both"]
K = 10


@dataclass(frozen=True, kw_only=True)
class RecommendOptions:
    """Everything `attnkit train recommend` takes besides the engine's TrainConfig."""

    out: str = field(default="runs/recommend", metadata={"help": "run directory to write"})
    data: str | None = field(
        default=None,
        metadata={"help": "interactions: SASRec 'user item' text, user,item[,rating][,timestamp] CSV, or ratings.dat"},
    )
    min_count: int = field(default=0, metadata={"help": "k-core filter on users and items (0 = off)"})
    duplicates: Literal["error", "drop", "keep"] = field(
        default="error", metadata={"help": "what a repeated interaction line is: error, drop or keep"}
    )
    max_len: int = field(default=200, metadata={"help": "most recent items of a history the model sees"})
    d_model: int = field(default=50, metadata={"help": "model width d"})
    n_heads: int = field(default=1, metadata={"help": "attention heads"})
    n_layers: int = field(default=2, metadata={"help": "self-attention blocks"})
    d_ff: int = field(default=50, metadata={"help": "feed-forward width (the paper: d)"})
    dropout: float = field(default=0.2, metadata={"help": "dropout rate"})
    attention_dropout: float | None = field(
        default=None,
        metadata={"help": "dropout on the attention weights (None: the --dropout rate, as the reference code)"},
    )
    style: Style = field(
        default="reference",
        metadata={"help": "reference: the authors' blocks and initialisation; attnkit: attnkit.nn's pre-norm Encoder"},
    )
    loss: Loss = field(
        default="bce",
        metadata={
            "help": "bce: the paper's, one sampled negative per position; ce: softmax over all items; "
            "ce+bce: ce plus --bce-weight times bce (ce ranks all items, bce pushes uniformly drawn items down)"
        },
    )
    bce_weight: float = field(default=1.0, metadata={"help": "weight of the bce term of --loss ce+bce"})
    exclude_seen: bool = field(
        default=False,
        metadata={
            "help": "ce's softmax at each position leaves out the items already in the history there, which "
            "neither protocol (nor predict) ranks, so the model need not learn to push them down"
        },
    )
    length_buckets: bool = field(
        default=False,
        metadata={
            "help": "batch training users of similar history length together: less padding, faster epochs, "
            "but less learned per epoch (BENCHMARKS.md); off = batches drawn at random, as the reference code"
        },
    )
    average_last: int = field(
        default=1,
        metadata={
            "help": "average the weights of the last k evaluations and keep the average if it scores at least "
            "as well on validation as the best checkpoint (1 = off)"
        },
    )
    negatives: int = field(default=100, metadata={"help": "negatives per user of the sampled protocol"})
    eval_seed: int = field(default=0, metadata={"help": "seed of the sampled protocol's negatives"})
    eval_batch_size: int = field(default=256, metadata={"help": "users per evaluation batch"})

    # What runs saved before these options existed did (see tasks.runs.saved_options).
    SAVED_WITHOUT: ClassVar[dict[str, object]] = {"style": "attnkit", "attention_dropout": 0.0, "length_buckets": True}

    def __post_init__(self) -> None:
        if not self.data:
            raise UserError("give --data FILE (interactions)")
        if self.max_len < 1:
            raise UserError(f"--max-len must be at least 1, got {self.max_len}")
        if self.average_last < 1:
            raise UserError(f"--average-last must be at least 1, got {self.average_last}")
        if self.negatives < 1:
            raise UserError(f"--negatives must be at least 1, got {self.negatives}")
        if not self.bce_weight > 0:
            raise UserError(f"--bce-weight must be positive, got {self.bce_weight}")
        if self.bce_weight != 1.0 and self.loss != "ce+bce":
            raise UserError(f"--bce-weight weighs the bce term of --loss ce+bce; the loss is {self.loss}")
        if self.exclude_seen and self.loss == "bce":
            raise UserError("--exclude-seen changes the softmax of --loss ce or ce+bce; bce draws unseen items already")
        check_model_options(lambda: self.model_config(n_items=1))

    def model_config(self, n_items: int) -> SASRecConfig:
        return SASRecConfig(
            n_items=n_items,
            max_len=self.max_len,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            attention_dropout=self.dropout if self.attention_dropout is None else self.attention_dropout,
            style=self.style,
        )

    def task(self, n_items: int) -> RecommendTask:
        """The loss and metrics these options train and evaluate with, over n_items items."""
        return RecommendTask(self.loss, n_items, self.bce_weight, self.exclude_seen)


TRAIN_DEFAULTS = {
    "metric": "sampled_ndcg@10",
    "metric_mode": "max",
    "lr": 1e-3,
    "beta2": 0.98,
    "weight_decay": 0.0,
    "schedule": "constant",
    "warmup_steps": 0,
    "grad_clip": 0.0,
    "epochs": 200,
    "batch_size": 128,
}


def describe(protocol: str, n_items: int, negatives: int, seed: int) -> str:
    """The evaluation protocol in words, printed and saved next to every figure."""
    if protocol == "sampled":
        return (
            f"sampled: target among {negatives} negatives drawn uniformly with replacement from items "
            f"outside the user's training history, seed {seed}, all users"
        )
    return f"full: target ranked among all {n_items:,} items minus those in the user's history, all users"


def rank_metrics(ranks: Tensor, prefix: str, k: int = K) -> dict[str, float]:
    """HR@k, NDCG@k and MRR from 0-based ranks (N,) of the held-out items."""
    ranks = ranks.double()
    hit = ranks < k
    return {
        f"{prefix}_hr@{k}": float(hit.double().mean()),
        f"{prefix}_ndcg@{k}": float((hit / torch.log2(ranks + 2)).mean()),
        f"{prefix}_mrr": float((1.0 / (ranks + 1)).mean()),
    }


def sample_negatives(seen: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Items drawn uniformly with replacement from those not marked in `seen`.

    Args:
        seen: (B, N + 1) bool, True at items a row must not draw (column 0, padding, always excluded).
        count: draws per row.
    Returns:
        (B, count) item ids; 0 where a row has no item left to draw.
    """
    rows, width = seen.size(0), seen.size(1)
    seen = seen.clone()
    seen[:, 0] = True
    possible = ~seen.all(dim=1)  # (B,)
    out = torch.randint(1, width, (rows, count), generator=generator, device=seen.device)
    bad = seen.gather(1, out) & possible[:, None]
    while bool(bad.any()):  # rejection: each round redraws only the collisions
        out[bad] = torch.randint(1, width, (int(bad.sum()),), generator=generator, device=seen.device)
        bad = seen.gather(1, out) & possible[:, None]
    out[~possible] = 0
    return out


def seen_matrix(histories: Tensor, n_items: int) -> Tensor:
    """histories (B, L) item ids (0 = padding) -> (B, N + 1) bool, True at every item present."""
    seen = torch.zeros(histories.size(0), n_items + 1, dtype=torch.bool, device=histories.device)
    return seen.scatter_(1, histories, True)


def seen_so_far(inputs: Tensor) -> Tensor:
    """inputs (B, L) -> (B, L, L): at [b, t], the items of row b up to position t, 0 after it (and at padding)."""
    length = inputs.size(1)
    later = torch.ones(length, length, dtype=torch.bool, device=inputs.device).triu(1)  # (t, s): s > t
    return inputs[:, None, :].expand(-1, length, -1).masked_fill(later, 0)


def left_pad(sequences: list[list[int]]) -> Tensor:
    """Pad on the left with 0 so that the most recent item is in the last column: (B, max length)."""
    width = max(1, max(len(s) for s in sequences))
    out = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            out[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
    return out


class RecommendTask:
    """Next-item loss (the paper's BCE with sampled negatives, full softmax CE, or both) and ranking metrics.

    Args:
        loss: "bce", "ce" or "ce+bce" (CE + bce_weight · BCE).
        n_items: items V (ids 1..V; 0 is padding).
        bce_weight: weight of the BCE term of "ce+bce".
        exclude_seen: CE's softmax at position t leaves out the input items up to t (the history the
            model has seen there), except the target itself.
    """

    def __init__(self, loss: Loss, n_items: int, bce_weight: float = 1.0, exclude_seen: bool = False) -> None:
        self.loss_kind, self.n_items, self.bce_weight = loss, n_items, bce_weight
        self.exclude_seen = exclude_seen

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        states = model(batch["input"])  # (B, L, D)
        target = batch["target"]  # (B, L), 0 at padding
        real = target != 0
        states_real, target_real = states[real], target[real]  # (N, D), (N,)
        sasrec = unwrap(model)
        loss = states.new_zeros(())
        if self.loss_kind in ("ce", "ce+bce"):
            # Softmax over the real items 1..V (row 0 of the table is padding), chunk by chunk.
            exclude = seen_so_far(batch["input"])[real] - 1 if self.exclude_seen else None  # (N, L), -1 = none
            loss = loss + linear_cross_entropy(
                states_real, sasrec.item_embed.weight[1:], target_real - 1, exclude=exclude
            )
        if self.loss_kind in ("bce", "ce+bce"):
            seen = seen_matrix(batch["history"], self.n_items)  # (B, V + 1)
            negatives = sample_negatives(seen, target.size(1))[real]  # (N,)
            pos = sasrec.score(states_real, target_real[:, None]).squeeze(-1).float()  # (N,)
            neg = sasrec.score(states_real, negatives[:, None]).squeeze(-1).float()
            has_negative = negatives != 0
            bce = -(F.logsigmoid(pos) + F.logsigmoid(-neg) * has_negative).mean()
            loss = loss + (bce if self.loss_kind == "bce" else self.bce_weight * bce)
        return loss, int(real.sum())

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        sasrec = unwrap(model)
        last = sasrec(batch["input"])[:, -1]  # (B, D)
        scores = sasrec.score_all(last).float()  # (B, V + 1)
        target = batch["target"]
        target_score = scores.gather(1, target[:, None])  # (B, 1)
        negatives = batch["negatives"]  # (B, K_neg)
        sampled_rank = ((scores.gather(1, negatives) > target_score) & (negatives != 0)).sum(dim=1)
        excluded = seen_matrix(batch["seen"], self.n_items)
        excluded[:, 0] = True
        excluded.scatter_(1, target[:, None], False)  # a re-consumed target still counts
        full_rank = ((scores > target_score) & ~excluded).sum(dim=1)
        return {"sampled_rank": sampled_rank, "full_rank": full_rank}

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        return {**rank_metrics(rows["sampled_rank"], "sampled"), **rank_metrics(rows["full_rank"], "full")}


# ---------------------------------------------------------------------------------------- data


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
        ids = json.loads((run_dir / "ids.json").read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{run_dir}: cannot read the run's interactions ({error})") from None
    flat = tensors["items"].tolist()
    sequences, start = [], 0
    for length in tensors["lengths"].tolist():
        sequences.append(flat[start : start + length])
        start += length
    return Interactions(sequences, ids["users"], ids["items"], ids.get("source", ""))


# ---------------------------------------------------------------------------------------- commands


def train(
    options: RecommendOptions | None,
    train_config: TrainConfig,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    log: Any = print,
) -> dict[str, float]:
    """`attnkit train recommend`: train SASRec, select by validation NDCG@10, report test metrics."""
    where, run_dir, options, train_config, _, log = start_run(
        options, RecommendOptions, train_config, resume=resume, run_dir=run_dir, log=log
    )
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
        config = {
            "task": "recommend",
            "options": asdict(options),
            "model": model_config.to_dict(),
            "train": train_config.to_dict(),
        }
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
    report(metrics, "test", data.n_items, options, log)
    return metrics


def report(metrics: dict[str, float], split: str, n_items: int, options: RecommendOptions, log: Any) -> None:
    """Print each protocol's figures under its description."""
    for protocol in ("sampled", "full"):
        if f"{protocol}_hr@{K}" not in metrics:
            continue
        shown = [
            f"HR@{K} {metrics[f'{protocol}_hr@{K}']:.4f}",
            f"NDCG@{K} {metrics[f'{protocol}_ndcg@{K}']:.4f}",
            f"MRR {metrics[f'{protocol}_mrr']:.4f}",
        ]
        log(f"{split} [{describe(protocol, n_items, options.negatives, options.eval_seed)}]")
        log("  " + "  ".join(shown))


def _read_metrics(run_dir: Path) -> dict[str, float]:
    import json

    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


class LoadedRecommender:
    """A trained SASRec run, for evaluate and predict."""

    def __init__(self, run_dir: str | Path, device: str = "cpu") -> None:
        self.run_dir, config = open_run(run_dir)
        if config["task"] != "recommend":
            raise UserError(f"{self.run_dir}: is a {config['task']} run, not a recommend run")
        self.options = saved_options(RecommendOptions, config["options"])
        self.data = load_interactions(self.run_dir)
        self.model = SASRec(SASRecConfig.from_dict(config["model"]))
        load_weights(self.model, self.run_dir / "model.safetensors")
        self.device = torch.device(device)
        self.model.to(self.device).eval()

    def evaluate(self, protocol: Protocol = "both", log: Any = print) -> dict[str, float]:
        """Test metrics of the protocol(s), as training reported them."""
        split = leave_one_out(self.data.sequences)
        test = eval_set(
            split, "test", self.data.n_items, self.options.max_len, self.options.negatives, self.options.eval_seed
        )
        task = self.options.task(self.data.n_items)
        batches = test.batches(self.options.eval_batch_size)
        rows: dict[str, list[Tensor]] = {}
        with torch.no_grad():
            for indices in batches.plan(0):
                batch = {k: v.to(self.device) for k, v in batches.collate(indices).items()}
                for key, value in task.eval_step(self.model, batch).items():
                    rows.setdefault(key, []).append(value.cpu())
        metrics = task.metrics({k: torch.cat(v) for k, v in rows.items()})
        if protocol != "both":
            metrics = {k: v for k, v in metrics.items() if k.startswith(protocol)}
        write_metrics(self.run_dir, {**_read_metrics(self.run_dir), **metrics})  # keeps the other protocol's
        report(metrics, "test", self.data.n_items, self.options, log)
        return metrics

    def recommend(self, history: list[int], k: int) -> list[tuple[int, float]]:
        """Top-k (internal item id, score) for a history of internal ids, never an item in it."""
        ids = torch.tensor([history[-self.options.max_len :]], device=self.device)
        with torch.no_grad():
            scores = self.model.score_all(self.model(ids)[:, -1]).float()[0]  # (V + 1,)
        scores[0] = float("-inf")
        scores[torch.tensor(history, device=self.device)] = float("-inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        values, items = scores.topk(k)
        return [(int(i), float(v)) for v, i in zip(values, items, strict=True)]

    def user_history(self, user: str) -> list[int]:
        """All items of a known user (original id), oldest first."""
        try:
            index = self.data.users.index(str(int(user)) if user.strip().isdigit() else user)
        except ValueError:
            raise UserError(f"user {user!r} is not in this run's data; give --history ITEMS for a new user") from None
        return self.data.sequences[index]

    def parse_history(self, text: str) -> list[int]:
        """'12,45,7' (original item ids, oldest first) -> internal ids; unknown items are an error."""
        index = {item: i for i, item in enumerate(self.data.items) if i}
        history, unknown = [], []
        for part in text.split(","):
            key = part.strip()
            key = str(int(key)) if key.isdigit() else key
            if key in index:
                history.append(index[key])
            elif key:
                unknown.append(part.strip())
        if unknown:
            raise UserError(f"item(s) {', '.join(unknown[:5])} are not in this run's data")
        if not history:
            raise UserError("--history is empty; give item ids separated by commas")
        return history

    def names(self, path: str | None) -> dict[str, str]:
        return read_item_names(path) if path else {}
