"""Sequential recommendation: ranking metrics against hand-computed values, negative sampling,
batching helpers, `eval_step` on a model whose scores are known, and `attnkit train recommend`,
`evaluate` and `predict` end to end on users walking a cycle of items."""

from __future__ import annotations

import json
import math
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from attnkit.cli import main
from attnkit.data.interactions import leave_one_out
from attnkit.models.sasrec import SASRec, SASRecConfig
from attnkit.tasks.recommend import (
    RecommendTask,
    eval_set,
    left_pad,
    rank_metrics,
    sample_negatives,
    seen_matrix,
    seen_so_far,
    train_batches,
)
from tests.averaging import assert_average_or_best


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and far faster than on two busy shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------- metrics


def test_rank_metrics_hand_computed():
    ranks = torch.tensor([0, 3, 9, 10, 50])
    metrics = rank_metrics(ranks, "full")
    assert set(metrics) == {"full_hr@10", "full_ndcg@10", "full_mrr"}
    assert metrics["full_hr@10"] == pytest.approx(3 / 5)  # ranks 0, 3 and 9 are in the top 10
    assert metrics["full_ndcg@10"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(11)) / 5)
    assert metrics["full_mrr"] == pytest.approx((1 + 1 / 4 + 1 / 10 + 1 / 11 + 1 / 51) / 5)


@pytest.mark.parametrize(
    ("rank", "hr", "ndcg", "mrr"),
    [(0, 1.0, 1.0, 1.0), (1, 1.0, 1 / math.log2(3), 0.5), (3, 1.0, 1 / math.log2(5), 0.25), (10, 0.0, 0.0, 1 / 11)],
)
def test_rank_metrics_single(rank, hr, ndcg, mrr):
    metrics = rank_metrics(torch.tensor([rank]), "sampled")
    assert metrics == pytest.approx({"sampled_hr@10": hr, "sampled_ndcg@10": ndcg, "sampled_mrr": mrr})


def test_rank_metrics_other_k():
    metrics = rank_metrics(torch.tensor([0, 4, 5]), "x", k=5)
    assert metrics["x_hr@5"] == pytest.approx(2 / 3)
    assert metrics["x_ndcg@5"] == pytest.approx((1 + 1 / math.log2(6)) / 3)


# ---------------------------------------------------------------------------------------- sampling


def test_sample_negatives_never_draws_seen_items_or_padding():
    generator = torch.Generator().manual_seed(0)
    seen = torch.rand(16, 21, generator=generator) < 0.7  # (B, N + 1), N = 20
    seen[:, 0] = False  # column 0 is excluded even when not marked
    before = seen.clone()
    drawn = sample_negatives(seen, 500, generator)
    assert drawn.shape == (16, 500)
    assert torch.equal(seen, before)  # the caller's mask is left alone
    assert (drawn != 0).all()
    assert not seen.gather(1, drawn).any()
    for row in range(16):  # uniform over what is left: with 500 draws each unseen item appears
        allowed = set(torch.nonzero(~seen[row, 1:]).flatten().add(1).tolist())
        assert set(drawn[row].tolist()) == allowed


def test_sample_negatives_is_reproducible():
    seen = torch.zeros(4, 51, dtype=torch.bool)
    seen[:, 1:10] = True
    a = sample_negatives(seen, 100, torch.Generator().manual_seed(3))
    b = sample_negatives(seen, 100, torch.Generator().manual_seed(3))
    c = sample_negatives(seen, 100, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_negatives_row_with_nothing_left_gets_zeros():
    seen = torch.zeros(3, 6, dtype=torch.bool)
    seen[1, 1:] = True  # row 1 has seen every item
    seen[2, 1:5] = True  # row 2 can only draw item 5
    drawn = sample_negatives(seen, 7, torch.Generator().manual_seed(0))
    assert (drawn[0] >= 1).all()
    assert torch.equal(drawn[1], torch.zeros(7, dtype=torch.long))
    assert torch.equal(drawn[2], torch.full((7,), 5))


def test_seen_matrix():
    seen = seen_matrix(torch.tensor([[0, 0, 3], [1, 4, 4]]), n_items=5)
    assert seen.shape == (2, 6)
    assert seen.dtype == torch.bool
    assert seen[:, 1:].tolist() == [[False, False, True, False, False], [True, False, False, True, False]]


def test_left_pad():
    assert left_pad([[1, 2, 3], [4], []]).tolist() == [[1, 2, 3], [0, 0, 4], [0, 0, 0]]
    assert left_pad([[]]).tolist() == [[0]]
    assert left_pad([[7]]).dtype == torch.long


# ---------------------------------------------------------------------------------------- data


SEQUENCES = [[1, 2, 3, 4, 5], [6, 7, 8], [9, 10], [2, 4, 6, 8, 10, 1, 3]]


def test_eval_set_valid_and_test():
    split = leave_one_out(SEQUENCES)
    valid = eval_set(split, "valid", n_items=12, max_len=3, negatives=200, seed=0)
    assert valid.users == [0, 1, 3]  # user 2 has fewer than 3 items
    assert valid.targets == [4, 7, 1]
    assert valid.seen == [[1, 2, 3], [6], [2, 4, 6, 8, 10]]
    assert valid.inputs == [[1, 2, 3], [6], [6, 8, 10]]  # the most recent max_len items
    test = eval_set(split, "test", n_items=12, max_len=3, negatives=200, seed=0)
    assert test.users == [0, 1, 3]
    assert test.targets == [5, 8, 3]
    assert test.seen == [[1, 2, 3, 4], [6, 7], [2, 4, 6, 8, 10, 1]]
    assert test.inputs == [[2, 3, 4], [6, 7], [8, 10, 1]]
    for which, ev in (("valid", valid), ("test", test)):
        assert ev.negatives.shape == (3, 200)
        for row, user in enumerate(ev.users):
            excluded = {0, *split.train[user], ev.targets[row]}
            drawn = set(ev.negatives[row].tolist())
            assert not drawn & excluded, which
            # Uniform with replacement over the rest: 200 draws reach all of them (the test item's
            # negatives may include the validation item, as in the reference code).
            assert drawn == set(range(1, 13)) - excluded, which
    again = eval_set(split, "test", n_items=12, max_len=3, negatives=200, seed=0)
    other = eval_set(split, "test", n_items=12, max_len=3, negatives=200, seed=1)
    assert torch.equal(again.negatives, test.negatives)
    assert not torch.equal(other.negatives, test.negatives)


def test_eval_set_batches():
    split = leave_one_out(SEQUENCES)
    test = eval_set(split, "test", n_items=12, max_len=3, negatives=5, seed=0)
    batches = test.batches(2)
    plan = batches.plan(0)
    assert sorted(i for b in plan for i in b) == [0, 1, 2]
    batch = batches.collate([0, 1])
    assert batch["input"].tolist() == [[2, 3, 4], [0, 6, 7]]
    assert batch["seen"].tolist() == [[1, 2, 3, 4], [0, 0, 6, 7]]
    assert batch["target"].tolist() == [5, 8]
    assert torch.equal(batch["negatives"], test.negatives[[0, 1]])


def test_train_batches_shift_by_one():
    split = leave_one_out(SEQUENCES)  # training prefixes [1,2,3], [6], [9,10], [2,4,6,8,10]
    batches, count = train_batches(split, max_len=3, batch_size=8, seed=0)
    assert count == 3  # the user with a 1-item prefix has nothing to predict
    (plan,) = batches.plan(0)
    batch = batches.collate(sorted(plan))
    assert batch["input"].tolist() == [[0, 1, 2], [0, 0, 9], [4, 6, 8]]
    assert batch["target"].tolist() == [[0, 2, 3], [0, 0, 10], [6, 8, 10]]
    assert batch["history"].tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 9, 10], [2, 4, 6, 8, 10]]


def test_train_batches_random_or_length_bucketed():
    """Both visit every user once per epoch, in an order fixed by (seed, epoch); only bucketing groups lengths."""
    rng = random.Random(0)
    sequences = [list(range(1, rng.randint(6, 60))) for _ in range(96)]
    split = leave_one_out(sequences)
    lengths = [len(prefix) - 1 for prefix in split.train]

    def spread(plan):  # mean length range within a batch
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plan) / len(plan)

    spreads = {}
    for buckets in (False, True):
        batches, count = train_batches(split, max_len=64, batch_size=4, seed=3, length_buckets=buckets)
        plan = batches.plan(0)
        assert sorted(i for b in plan for i in b) == list(range(count)) and count == 96
        assert plan == batches.plan(0) and plan != batches.plan(1)
        spreads[buckets] = spread(plan)
    assert spreads[True] < spreads[False] / 3


# ---------------------------------------------------------------------------------------- the task


class FixedScores(nn.Module):
    """A stand-in for SASRec whose last-position state selects a fixed row of scores per batch row."""

    def __init__(self, scores: Tensor) -> None:
        super().__init__()
        self.table = scores  # (B, V + 1)

    def forward(self, history: Tensor) -> Tensor:
        rows = history.size(0)
        return torch.eye(rows)[:, None, :].expand(rows, history.size(1), rows)  # (B, L, B)

    def score_all(self, states: Tensor) -> Tensor:
        return states @ self.table


def test_eval_step_ranks_on_known_scores():
    #                         item: 0    1    2    3    4    5    6
    scores = torch.tensor([[9.0, 5.0, 4.0, 3.0, 3.0, 1.0, 0.5], [9.0, 1.0, 8.0, 7.0, 6.0, 2.0, 0.0]])
    batch = {
        "input": torch.tensor([[0, 1], [2, 5]]),
        "seen": torch.tensor([[0, 1], [2, 5]]),
        "target": torch.tensor([3, 5]),
        "negatives": torch.tensor([[2, 2, 4, 0], [1, 6, 6, 1]]),
    }
    rows = RecommendTask("ce", n_items=6).eval_step(FixedScores(scores), batch)
    # Row 0, target 3 (score 3): padding (9) and the seen item 1 (5) do not count, item 4 ties (not
    # higher): only item 2 is ranked above. Among the negatives, item 2 drawn twice counts twice;
    # the tie and the 0 (no negative) do not.
    # Row 1, target 5 (score 2) was seen before (a re-consumed item): it is still ranked; above it
    # are items 3 and 4, while item 2 (8) is excluded as seen.
    assert rows["full_rank"].tolist() == [1, 2]
    assert rows["sampled_rank"].tolist() == [2, 0]
    metrics = RecommendTask("ce", n_items=6).metrics(rows)
    assert metrics["full_mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert metrics["sampled_hr@10"] == 1.0


def test_eval_step_full_rank_matches_a_per_user_loop():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=40, max_len=8, d_model=16, n_heads=2, n_layers=1, d_ff=16)).eval()
    rng = random.Random(0)
    sequences = [rng.sample(range(1, 41), rng.randint(3, 12)) for _ in range(9)]
    test = eval_set(leave_one_out(sequences), "test", n_items=40, max_len=8, negatives=20, seed=0)
    batches = test.batches(4)
    task = RecommendTask("bce", n_items=40)
    full, sampled = {}, {}
    with torch.no_grad():
        for indices in batches.plan(0):
            rows = task.eval_step(model, batches.collate(indices))
            full.update(zip(indices, rows["full_rank"].tolist(), strict=True))
            sampled.update(zip(indices, rows["sampled_rank"].tolist(), strict=True))
        for i, target in enumerate(test.targets):
            scores = model.score_all(model(torch.tensor([test.inputs[i]]))[0, -1])  # (V + 1,)
            others = [item for item in range(1, 41) if item != target and item not in test.seen[i]]
            assert full[i] == sum(bool(scores[item] > scores[target]) for item in others)
            negatives = test.negatives[i].tolist()
            assert sampled[i] == sum(bool(scores[item] > scores[target]) for item in negatives)


@pytest.mark.parametrize("loss", ["ce", "bce", "ce+bce"])
def test_each_loss_overfits_one_batch(loss):
    torch.manual_seed(0)
    split = leave_one_out([[(start + t) % 20 + 1 for t in range(12)] for start in range(0, 20, 3)])
    batches, _ = train_batches(split, max_len=10, batch_size=16, seed=0)
    batch = batches.collate(batches.plan(0)[0])
    model = SASRec(SASRecConfig(n_items=20, max_len=10, d_model=16, n_heads=2, n_layers=1, d_ff=16, dropout=0.0))
    task = RecommendTask(loss, n_items=20)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first, count = task.loss(model, batch)
    assert count == int((batch["target"] != 0).sum())
    for _ in range(60):
        optimizer.zero_grad()
        value, _ = task.loss(model, batch)
        value.backward()
        optimizer.step()
    assert value.item() < 0.2 * first.item()


def test_mixed_loss_is_ce_plus_weighted_bce():
    torch.manual_seed(0)
    split = leave_one_out([[(start + t) % 20 + 1 for t in range(12)] for start in range(0, 20, 3)])
    batches, _ = train_batches(split, max_len=10, batch_size=16, seed=0)
    batch = batches.collate(batches.plan(0)[0])
    model = SASRec(SASRecConfig(n_items=20, max_len=10, d_model=16, n_heads=2, n_layers=1, d_ff=16, dropout=0.0))
    ce, _ = RecommendTask("ce", n_items=20).loss(model, batch)
    torch.manual_seed(1)
    bce, _ = RecommendTask("bce", n_items=20).loss(model, batch)
    torch.manual_seed(1)  # the same sampled negatives
    mixed, count = RecommendTask("ce+bce", n_items=20, bce_weight=0.25).loss(model, batch)
    assert count == int((batch["target"] != 0).sum())
    torch.testing.assert_close(mixed, ce + 0.25 * bce)


def test_seen_so_far_lists_the_items_up_to_each_position():
    inputs = torch.tensor([[0, 4, 7, 2], [5, 6, 1, 3]])
    seen = seen_so_far(inputs)
    assert seen.shape == (2, 4, 4)
    assert seen[0].tolist() == [[0, 0, 0, 0], [0, 4, 0, 0], [0, 4, 7, 0], [0, 4, 7, 2]]
    assert seen[1, 1].tolist() == [5, 6, 0, 0]


def test_exclude_seen_leaves_the_history_out_of_the_softmax():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=6, max_len=4, d_model=8, n_heads=1, n_layers=1, d_ff=8, dropout=0.0))
    # Row 1 re-consumes item 2: a target seen earlier still counts as the target.
    batch = {
        "input": torch.tensor([[0, 1, 2, 3], [2, 4, 5, 1]]),
        "target": torch.tensor([[0, 2, 3, 4], [4, 5, 1, 2]]),
        "history": torch.tensor([[0, 1, 2, 3, 4], [2, 4, 5, 1, 2]]),
    }
    ours, count = RecommendTask("ce", n_items=6, exclude_seen=True).loss(model, batch)
    logits = model.score_all(model(batch["input"]))  # (B, L, V + 1)
    expected = []
    for b in range(2):
        for t in range(4):
            target = int(batch["target"][b, t])
            if target == 0:
                continue
            row = logits[b, t, 1:].clone()
            for item in batch["input"][b, : t + 1].tolist():
                if item and item != target:
                    row[item - 1] = float("-inf")
            expected.append(torch.nn.functional.cross_entropy(row[None], torch.tensor([target - 1])))
    assert count == len(expected) == 7
    torch.testing.assert_close(ours, torch.stack(expected).mean())
    plain, _ = RecommendTask("ce", n_items=6).loss(model, batch)
    assert ours < plain


def test_bce_loss_with_no_negative_left_is_finite():
    model = SASRec(SASRecConfig(n_items=3, max_len=4, d_model=8, n_heads=1, n_layers=1, d_ff=8))
    batch = {"input": torch.tensor([[1, 2]]), "target": torch.tensor([[2, 3]]), "history": torch.tensor([[1, 2, 3]])}
    value, count = RecommendTask("bce", n_items=3).loss(model, batch)
    assert count == 2
    assert torch.isfinite(value)


# ---------------------------------------------------------------------------------------- end to end

N_ITEMS = 100  # a catalogue large enough that the 100 sampled negatives rarely repeat one item
TINY = ["--max-len", "20", "--d-model", "32", "--n-heads", "2", "--n-layers", "1", "--d-ff", "32"]
TINY += ["--dropout", "0.1", "--batch-size", "8", "--lr", "5e-3", "--eval-every", "16"]
TINY += ["--no-progress", "--threads", "1"]
METRICS = {"sampled_hr@10", "sampled_ndcg@10", "sampled_mrr", "full_hr@10", "full_ndcg@10", "full_mrr"}


def _next(item: int) -> int:
    return item % N_ITEMS + 1


def _write_cycle(path, users: int = 60, seed: int = 0):
    """Each user walks the cycle 1 -> 2 -> ... -> N_ITEMS -> 1 from a random start for 12-25 steps:
    the next item is a function of the last one."""
    rng = random.Random(seed)
    histories = {}
    with open(path, "w") as handle:
        for user in range(1, users + 1):
            item = rng.randint(1, N_ITEMS)
            histories[user] = []
            for _ in range(rng.randint(12, 25)):
                handle.write(f"{user} {item}\n")
                histories[user].append(item)
                item = _next(item)
    return histories


def _train(data, run, *extra: str) -> int:
    return main(["train", "recommend", "--data", str(data), "--out", str(run), *TINY, *extra])


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    data = root / "cycle.txt"
    histories = _write_cycle(data)
    runs = {}

    def run(loss: str):
        if loss not in runs:
            runs[loss] = root / f"run_{loss}"
            assert _train(data, runs[loss], "--epochs", "6", "--loss", loss) == 0
        return runs[loss]

    return data, histories, run


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_train_learns_the_cycle(cycle, loss, capsys):
    _, _, run = cycle
    run = run(loss)
    out = capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "interactions.safetensors", "ids.json", "history.csv"):
        assert (run / name).is_file(), name
    for name in ("state.json", "model.safetensors"):
        assert (run / "last" / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == METRICS
    # Chance is about 10/100 (sampled) and 10/85 (full); a deterministic cycle is learned nearly perfectly.
    assert metrics["sampled_hr@10"] >= 0.9
    assert metrics["full_hr@10"] >= 0.9
    assert metrics["full_ndcg@10"] >= 0.6
    assert "data: 60 users, 100 items" in out
    assert "test [sampled: target among 100 negatives drawn uniformly with replacement" in out
    assert "test [full: target ranked among all 100 items minus those in the user's history" in out
    assert json.loads(out.strip().splitlines()[-1]) == pytest.approx(metrics)
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "recommend"
    assert config["options"]["loss"] == loss
    assert config["model"]["n_items"] == 100
    # The default style is the authors' code, attention weights dropped at the --dropout rate.
    assert (config["model"]["style"], config["model"]["attention_dropout"]) == ("reference", 0.1)
    ids = json.loads((run / "ids.json").read_text())
    assert ids["users"] == [str(u) for u in range(1, 61)]
    assert ids["items"] == ["", *[str(i) for i in range(1, 101)]]
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"step", "train_loss", "val_sampled_ndcg@10", "val_full_mrr"} <= set(header)


def test_exclude_seen_trains_learns_the_cycle_and_is_saved(cycle, tmp_path, capsys):
    data, _, _ = cycle
    run = tmp_path / "unseen"
    assert _train(data, run, "--epochs", "6", "--loss", "ce+bce", "--exclude-seen") == 0
    out = capsys.readouterr().out
    assert "loss ce+bce, seen items left out of the softmax" in out
    assert json.loads((run / "config.json").read_text())["options"]["exclude_seen"] is True
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["sampled_hr@10"] >= 0.9 and metrics["full_hr@10"] >= 0.9
    assert main(["evaluate", str(run)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(metrics)


@pytest.mark.parametrize("protocol", ["full", "sampled", "both"])
def test_evaluate_reproduces_the_training_figures(cycle, tmp_path, protocol, capsys):
    _, _, run = cycle
    copy = tmp_path / "run"
    shutil.copytree(run("ce"), copy)  # evaluate rewrites metrics.json
    trained = json.loads((copy / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(copy), "--protocol", protocol]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out.strip().splitlines()[-1])
    expected = {k: v for k, v in trained.items() if protocol == "both" or k.startswith(protocol)}
    assert set(printed) == set(expected)
    assert printed == pytest.approx(expected)
    # metrics.json keeps the other protocol's figures from training and updates this one's
    assert json.loads((copy / "metrics.json").read_text()) == pytest.approx(trained)
    assert ("test [full:" in out) == (protocol != "sampled")
    assert ("test [sampled:" in out) == (protocol != "full")


def test_attnkit_style_trains_and_evaluates_as_saved(cycle, tmp_path, capsys):
    data, _, _ = cycle
    run = tmp_path / "run"
    assert _train(data, run, "--epochs", "1", "--style", "attnkit", "--attention-dropout", "0.05") == 0
    model = json.loads((run / "config.json").read_text())["model"]
    assert (model["style"], model["attention_dropout"]) == ("attnkit", 0.05)
    trained = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(trained)


def test_average_last_keeps_the_better_of_average_and_best_and_tests_it(cycle, tmp_path, capsys):
    data, _, _ = cycle
    run = tmp_path / "run"
    assert _train(data, run, "--epochs", "8", "--average-last", "3") == 0  # 4 evaluations, 3 kept
    assert_average_or_best(run, 3, capsys.readouterr().out)
    trained = json.loads((run / "metrics.json").read_text())  # the test figures are the kept weights'
    assert main(["evaluate", str(run)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(trained)
    assert _train(data, tmp_path / "bad", "--average-last", "0") == 2
    assert "--average-last must be at least 1" in capsys.readouterr().err


def test_bad_bce_weight_is_one_line_and_exit_2(cycle, tmp_path, capsys):
    data, _, _ = cycle
    assert _train(data, tmp_path / "bad", "--loss", "ce+bce", "--bce-weight", "0") == 2
    err = capsys.readouterr().err
    assert "--bce-weight must be positive" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
    assert _train(data, tmp_path / "bad", "--loss", "ce", "--bce-weight", "2") == 2
    assert "--bce-weight weighs the bce term of --loss ce+bce; the loss is ce" in capsys.readouterr().err


def test_exclude_seen_with_the_bce_loss_is_one_line_and_exit_2(cycle, tmp_path, capsys):
    data, _, _ = cycle
    assert _train(data, tmp_path / "bad", "--loss", "bce", "--exclude-seen") == 2
    err = capsys.readouterr().err
    assert (
        "--exclude-seen changes the softmax of --loss ce or ce+bce; bce draws unseen items" in err
        and "Traceback" not in err
    )
    assert not (tmp_path / "bad").exists()


def _recommended(out: str) -> list[str]:
    """Original item ids of the printed `  1. item 42<TAB>score[<TAB>name]` lines."""
    return [line.split()[2] for line in out.splitlines() if line.strip().split(".")[0].isdigit()]


def test_predict_for_a_known_user(cycle, capsys):
    _, histories, run = cycle
    run = run("ce")
    first = 0
    for user, history in histories.items():
        capsys.readouterr()
        assert main(["predict", str(run), "--user", str(user), "-k", "5"]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0] == f"top 5 unseen items for user {user}:"
        items = [int(i) for i in _recommended(out)]
        assert len(items) == 5
        assert not set(items) & set(history)
        assert _next(history[-1]) in items
        first += items[0] == _next(history[-1])
    assert first >= 0.95 * len(histories)  # 58-60 of 60 across training seeds


def test_predict_for_a_new_history_with_names(cycle, tmp_path, capsys):
    _, _, run = cycle
    names = tmp_path / "names.tsv"
    names.write_text("".join(f"{i}\tItem number {i}\n" for i in range(1, N_ITEMS + 1)))
    capsys.readouterr()
    # Eight items: training histories are 10-23 items long, and the model is sure of the next item
    # only once it has seen a few.
    history = [str(i) for i in range(41, 49)]
    assert main(["predict", str(run("ce")), "--history", ",".join(history), "--items", str(names)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "top 10 unseen items for a new user with 8 item(s):"
    lines = out.splitlines()[1:]
    assert len(lines) == 10
    assert lines[0].split("\t")[0].strip() == "1. item 49"
    assert lines[0].endswith("\tItem number 49")
    assert all(line.split("\t")[2].startswith("Item number ") for line in lines)
    assert not set(history) & set(_recommended(out))
    scores = [float(line.split("\t")[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)


def test_predict_short_history_and_large_k(cycle, capsys):
    _, _, run = cycle
    capsys.readouterr()
    assert main(["predict", str(run("ce")), "--history", "3, 4,5", "-k", "500"]) == 0
    items = _recommended(capsys.readouterr().out)
    assert len(items) == N_ITEMS - 3  # every unseen item, once
    assert sorted(items, key=int) == [str(i) for i in range(1, N_ITEMS + 1) if i not in (3, 4, 5)]


def test_resume_continues_an_interrupted_run(cycle, tmp_path, capsys):
    """A run stopped after 2 of 6 epochs, resumed, ends where the straight 6-epoch run ends."""
    data, _, run = cycle
    straight = run("ce")
    copy = tmp_path / "cycle.txt"
    shutil.copy(data, copy)
    resumed = tmp_path / "run"
    assert _train(copy, resumed, "--epochs", "2", "--loss", "ce") == 0
    # What a 6-epoch run killed after its step-16 checkpoint leaves behind: the same run directory,
    # with 6 epochs in its configuration.
    config = json.loads((resumed / "config.json").read_text())
    config["train"]["epochs"] = 6
    (resumed / "config.json").write_text(json.dumps(config))
    copy.unlink()  # resuming reads the run's own copy of the interactions
    capsys.readouterr()
    assert main(["train", "recommend", "--out", str(resumed), "--resume", "--no-progress", "--threads", "1"]) == 0
    assert "resuming at step 16" in capsys.readouterr().out
    a = load_file(str(straight / "last" / "model.safetensors"))
    b = load_file(str(resumed / "last" / "model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    trained = json.loads((straight / "metrics.json").read_text())
    assert json.loads((resumed / "metrics.json").read_text()) == pytest.approx(trained)


def test_resume_of_a_run_saved_before_newer_options_trains_as_it_did(cycle, tmp_path, capsys):
    """Runs saved before `--style`, `--attention-dropout` and `--length-buckets` existed trained the
    attnkit style without attention dropout on bucketed batches; resuming one keeps all three."""
    data, _, _ = cycle
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    before = ["--loss", "ce", "--style", "attnkit", "--attention-dropout", "0", "--length-buckets"]
    assert _train(data, straight, "--epochs", "4", *before) == 0
    assert _train(data, resumed, "--epochs", "2", *before) == 0
    config = json.loads((resumed / "config.json").read_text())
    config["train"]["epochs"] = 4
    for name in ("style", "attention_dropout", "length_buckets"):
        del config["options"][name]
    (resumed / "config.json").write_text(json.dumps(config))
    assert main(["train", "recommend", "--out", str(resumed), "--resume", "--no-progress", "--threads", "1"]) == 0
    a = load_file(str(straight / "last" / "model.safetensors"))
    b = load_file(str(resumed / "last" / "model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


# ------------------------------------------------------------------------ bad input: one line, exit 2


def _fails(args: list[str], capsys, expected: str) -> None:
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    assert expected in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 5\n1 6\n1 seven\n", "line 3: item id 'seven' is not a non-negative integer"),
        ("1 5\nu2 6\n", "line 2: user id 'u2'"),
        ("1 5\n1 6\n1 5\n", "line 3 (user 1, item 5) repeats line 1; pass --duplicates"),
        ("", "no interactions (the file is empty)"),
        ("\n\n", "no interactions (the file is empty)"),
        ("1 5\n1 6\n2 5\n", "no user has the 3 interactions a leave-one-out split needs"),
        ("1 5\n1 6\n1 7\n2 5\n", "no user has the 4 interactions training needs"),
    ],
)
def test_bad_training_data(tmp_path, capsys, text, expected):
    data = tmp_path / "data.txt"
    data.write_text(text)
    run = tmp_path / "run"
    _fails(["train", "recommend", "--data", str(data), "--out", str(run), *TINY], capsys, expected)
    assert not (run / "config.json").exists()  # nothing half-written


def test_duplicates_option_on_the_command_line(tmp_path, capsys):
    data = tmp_path / "data.txt"
    data.write_text("1 5\n1 6\n1 5\n1 7\n1 8\n2 6\n2 7\n2 8\n2 9\n")
    args = ["--data", str(data), "--epochs", "1", *TINY]
    assert main(["train", "recommend", "--out", str(tmp_path / "a"), "--duplicates", "drop", *args]) == 0
    out = capsys.readouterr().out
    assert f"note: {data}: dropped 1 duplicate interactions" in out
    assert "data: 2 users, 5 items, 8 interactions" in out
    assert main(["train", "recommend", "--out", str(tmp_path / "b"), "--duplicates", "keep", *args]) == 0
    assert "data: 2 users, 5 items, 9 interactions" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--user", "999"], "user '999' is not in this run's data; give --history"),
        (["--history", "3,500,777"], "item(s) 500, 777 are not in this run's data"),
        (["--history", "3,x"], "item(s) x are not in this run's data"),
        (["--history", " , "], "--history is empty"),
        (["--user", "1", "--history", "3,4"], "give either --user ID or --history ITEMS"),
        ([], "give either --user ID or --history ITEMS"),
        (["--user", "1", "-k", "0"], "--top-k must be at least 1"),
        (["--user", "1", "--items", "/nonexistent/movies.dat"], "no such file"),
    ],
)
def test_bad_predict_arguments(cycle, capsys, extra, expected):
    _, _, run = cycle
    _fails(["predict", str(run("ce")), *extra], capsys, expected)


def test_a_superscript_digit_in_history_is_a_clear_error(cycle, capsys):
    _, _, run = cycle
    _fails(["predict", str(run("ce")), "--history", "3,²"], capsys, "item(s) ² are not in this run's data")
