"""A trained SASRec run: recommend unseen items for a user or a history, evaluate on its test items."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from attnkit.data.interactions import is_integer_id, leave_one_out, read_item_names
from attnkit.engine.evaluation import collect
from attnkit.errors import UserError
from attnkit.models.sasrec import SASRec, SASRecConfig
from attnkit.tasks.base import Command, Run, metrics_command, random_ids
from attnkit.tasks.io import add_top_k_argument, checked_top_k
from attnkit.tasks.recommend.data import eval_set, left_pad, load_interactions
from attnkit.tasks.recommend.objective import report
from attnkit.tasks.recommend.options import Protocol, RecommendOptions
from attnkit.tasks.rundir import write_metrics


class RecommenderRun(Run, task="recommend", options=RecommendOptions, model=SASRec, config=SASRecConfig):
    """A trained `SASRec` with the run's own copy of the interactions (users, items, histories)."""

    options: RecommendOptions

    def setup(self) -> None:
        self.data = load_interactions(self.run_dir)

    def encode(self, inputs: list[list[int]]) -> dict[str, Tensor]:
        """Histories of internal item ids, oldest first -> {"ids": (B, L)}, the last max_len items of
        each, left-padded so that the most recent item is in the last column."""
        return {"ids": left_pad([history[-self.options.max_len :] for history in inputs]).to(self.device)}

    def export_spec(self) -> dict[str, Any]:
        return {
            "length": self.options.max_len,
            "axes": {"ids": "length"},
            "output": "scores",
            "meaning": "next-item scores (batch, items + 1) after each left-padded history (column 0: padding)",
        }

    def example_batch(self, batch_size: int, length: int) -> dict[str, Tensor]:
        return {"ids": random_ids(batch_size, length, 1, self.model.config.n_items + 1, 0, left=True)}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Scores (B, V + 1) of every item (column 0: padding) as the next item after each history."""
        with torch.no_grad():
            return self.model.score_all(self.model(batch["ids"])[:, -1]).float()

    def evaluate(self, protocol: Protocol = "both", log: Any = print) -> dict[str, float]:
        """Test metrics of the protocol(s), as training reported them."""
        options, n_items = self.options, self.data.n_items
        split = leave_one_out(self.data.sequences)
        test = eval_set(split, "test", n_items, options.max_len, options.negatives, options.eval_seed)
        task = options.task(n_items)
        batches = test.batches(options.eval_batch_size)
        rows = collect(lambda batch: task.eval_step(self.model, batch), batches.plan(0), batches.collate, self.device)
        metrics = task.metrics(rows)
        if protocol != "both":
            metrics = {k: v for k, v in metrics.items() if k.startswith(protocol)}
        write_metrics(self.run_dir, {**_read_metrics(self.run_dir), **metrics})  # keeps the other protocol's
        report(metrics, "test", n_items, options.negatives, options.eval_seed, log)
        return metrics

    def predict(self, inputs: list[list[str]], top_k: int = 10) -> list[list[tuple[str, float]]]:
        """For each history of original item ids (oldest first), the `top_k` unseen items as
        (original item id, score), best first."""
        index = self.item_index()
        found = self.recommend_many([self._internal(h, index) for h in inputs], top_k)
        return [[(self.data.items[item], score) for item, score in items] for items in found]

    record_options: ClassVar[dict[str, type]] = {"top_k": int}

    def records(self, inputs: list[str], top_k: int = 10) -> list[dict[str, Any]]:
        """Per history ("12,45,7": original item ids, oldest first): {"history", "items": [{"item",
        "score"}]}, the `top_k` unseen items, best first."""
        if top_k < 1:
            raise UserError("top_k must be at least 1")
        found = self.recommend_many([self.parse_history(text) for text in inputs], top_k)
        return [
            {"history": text, "items": [{"item": self.data.items[item], "score": score} for item, score in items]}
            for text, items in zip(inputs, found, strict=True)
        ]

    def recommend(self, history: list[int], k: int) -> list[tuple[int, float]]:
        """Top-k (internal item id, score) for a history of internal ids, never an item in it."""
        return self.recommend_many([history], k)[0]

    def recommend_many(
        self, histories: list[list[int]], k: int, batch_size: int = 256
    ) -> list[list[tuple[int, float]]]:
        """`recommend` for each history, `batch_size` histories through the model at a time (positions
        count back from the most recent item, so padding a history to a longer one's length changes
        nothing)."""
        found = []
        for start in range(0, len(histories), batch_size):
            chunk = histories[start : start + batch_size]
            scores = self.forward(self.encode(chunk))  # (B, V + 1)
            found += [self.top_items(history, row, k) for history, row in zip(chunk, scores, strict=True)]
        return found

    def top_items(self, history: list[int], scores: Tensor, k: int) -> list[tuple[int, float]]:
        """Top-k (internal item id, score) from the scores (V + 1,) of all items after `history`,
        never padding or an item of the history."""
        scores = scores.clone()
        scores[0] = float("-inf")
        scores[torch.tensor(history, device=self.device)] = float("-inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        values, items = scores.topk(k)
        return [(int(i), float(v)) for v, i in zip(values, items, strict=True)]

    def user_history(self, user: str) -> list[int]:
        """All items of a known user (original id), oldest first."""
        try:
            index = self.data.users.index(str(int(user)) if is_integer_id(user.strip()) else user)
        except ValueError:
            raise UserError(f"user {user!r} is not in this run's data; give --history ITEMS for a new user") from None
        return self.data.sequences[index]

    def item_index(self) -> dict[str, int]:
        """Original item id -> internal id (made once: every served history is looked up in it)."""
        if getattr(self, "_item_index", None) is None:
            self._item_index = {item: i for i, item in enumerate(self.data.items) if i}
        return self._item_index

    def parse_history(self, text: str) -> list[int]:
        """'12,45,7' (original item ids, oldest first) -> internal ids; unknown items are an error."""
        history = self._internal([part.strip() for part in text.split(",")], self.item_index())
        if not history:
            raise UserError("--history is empty; give item ids separated by commas")
        return history

    def _internal(self, items: list[str], index: dict[str, int]) -> list[int]:
        history, unknown = [], []
        for item in items:
            key = str(item).strip()
            key = str(int(key)) if is_integer_id(key) else key
            if key in index:
                history.append(index[key])
            elif key:
                unknown.append(str(item).strip())
        if unknown:
            raise UserError(f"item(s) {', '.join(unknown[:5])} are not in this run's data")
        return history


def _read_metrics(run_dir: Path) -> dict[str, float]:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------- commands


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol",
        choices=["sampled", "full", "both"],
        default="both",
        help="sampled (100 negatives, the paper's), full ranking, or both (default)",
    )


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="a user id of the run's data")
    parser.add_argument("--history", help="item ids a new user interacted with, oldest first: 12,45,7")
    parser.add_argument("--items", help="item names (MovieLens movies.dat, or id<TAB>name lines)")
    add_top_k_argument(parser, "items", 10)


def _predict(run: RecommenderRun, args: argparse.Namespace) -> int:
    top_k = checked_top_k(args) or 10
    if bool(args.user) == bool(args.history):
        raise UserError("give either --user ID or --history ITEMS")
    history = run.user_history(args.user) if args.user else run.parse_history(args.history)
    names = read_item_names(args.items) if args.items else {}
    who = f"user {args.user}" if args.user else f"a new user with {len(history)} item(s)"
    print(f"top {top_k} unseen items for {who}:")
    for rank, (item, score) in enumerate(run.recommend(history, top_k), start=1):
        original = run.data.items[item]
        name = names.get(original)
        print(f"  {rank:>2}. item {original}\t{score:.3f}" + (f"\t{name}" if name else ""))
    return 0


EVALUATE = metrics_command(
    "recommend: on the run's own test items, under --protocol.",
    _evaluate_arguments,
    lambda run, args: run.evaluate(args.protocol),
)
PREDICT = Command(
    _predict_arguments, _predict, "recommend: the top-k unseen items for a known --user or for a --history of items."
)
