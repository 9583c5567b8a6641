"""The engine on a toy regression task: it knows nothing of what the model computes."""

from __future__ import annotations

import csv

import pytest
import torch

from attnkit.engine import Dist, TrainConfig, Trainer
from tests.engine.toy import ToyTask, toy_batches, toy_model


def _trainer(tmp_path, **overrides) -> Trainer:
    settings = dict(epochs=3, batch_size=8, warmup_steps=2, lr=3e-2, progress=False, metric="mse", seed=0)
    settings.update(overrides)
    torch.manual_seed(0)
    return Trainer(
        toy_model(),
        ToyTask(),
        TrainConfig(**settings),
        tmp_path,
        toy_batches(64, shuffle=True),
        toy_batches(24, shuffle=False, seed=9),
        Dist(),
        log=lambda _m: None,
    )


def _history(tmp_path) -> list[dict[str, str]]:
    with open(tmp_path / "history.csv") as handle:
        return list(csv.DictReader(handle))


def test_learns_and_writes_history(tmp_path):
    trainer = _trainer(tmp_path)
    before = trainer.evaluate(toy_batches(24, shuffle=False, seed=9))["mse"]
    best = trainer.fit()
    assert best["val_mse"] < 0.5 * before
    rows = _history(tmp_path)
    assert [int(r["step"]) for r in rows] == [8, 16, 24]  # one evaluation per epoch of 8 steps
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "model.safetensors").is_file()


def test_eval_every_and_max_steps(tmp_path):
    _trainer(tmp_path, eval_every=5, max_steps=12, epochs=1).fit()
    assert [int(r["step"]) for r in _history(tmp_path)] == [5, 10, 12]  # max_steps outlasts one epoch


def test_time_limit_stops_after_evaluating_and_saving(tmp_path):
    messages: list[str] = []
    trainer = _trainer(tmp_path, max_minutes=1e-9, epochs=5)
    trainer.log = messages.append
    trainer.fit()
    assert [int(r["step"]) for r in _history(tmp_path)] == [1]  # the first step is already past the limit
    assert any("time limit" in m for m in messages)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "last" / "state.json").is_file()
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(max_minutes=0)


def test_kept_checkpoints_and_their_average(tmp_path):
    from safetensors.torch import load_file

    from attnkit.engine.checkpoint import average_weights

    trainer = _trainer(tmp_path, keep_checkpoints=2, epochs=3)
    trainer.fit()
    kept = trainer.checkpoints()
    assert [p.name for p in kept] == ["step-000000016.safetensors", "step-000000024.safetensors"]
    average_weights(trainer.model, kept)
    first, second = (load_file(str(p)) for p in kept)
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, (first[name] + second[name]) / 2)


@pytest.mark.parametrize("average_scores", [None, 0.5, 2.0])
def test_keep_average_keeps_the_average_unless_it_scores_worse(tmp_path, average_scores):
    from safetensors.torch import load_file

    trainer = _trainer(tmp_path, keep_checkpoints=2, epochs=3)
    trainer.fit()
    best = load_file(str(tmp_path / "model.safetensors"))
    trainer.model.load_state_dict(best)
    first, second = (load_file(str(p)) for p in trainer.checkpoints())
    scores = iter([1.0, average_scores])  # the best weights score 1.0, the average `average_scores`
    kept = trainer.keep_average(2, None if average_scores is None else lambda: next(scores))
    assert kept == (average_scores != 0.5)
    expected = {k: (first[k] + second[k]) / 2 for k in first} if kept else best
    written = load_file(str(tmp_path / "model.safetensors"))
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, expected[name])
        torch.testing.assert_close(written[name], expected[name])


def test_averaging_keeps_enough_checkpoints_and_one_is_off():
    assert TrainConfig(keep_checkpoints=2).averaging(5).keep_checkpoints == 5
    assert TrainConfig(keep_checkpoints=8).averaging(5).keep_checkpoints == 8
    assert TrainConfig().averaging(1).keep_checkpoints == 0


def test_validation_score_is_the_selection_metric_higher_is_better(tmp_path):
    trainer = _trainer(tmp_path, metric_mode="min")
    mse = trainer.evaluate(toy_batches(24, shuffle=False, seed=9))["mse"]
    assert trainer.validation_score() == pytest.approx(-mse)
    trainer.config = TrainConfig(metric="val_nothing", progress=False)
    with pytest.raises(KeyError, match="val_nothing"):
        trainer.validation_score()


def test_grad_accumulation_counts_optimizer_steps(tmp_path):
    trainer = _trainer(tmp_path, grad_accum=3, epochs=1)
    assert trainer.steps_per_epoch == 3  # 8 micro-batches -> steps of 3, 3 and 2
    trainer.fit()
    assert [int(r["step"]) for r in _history(tmp_path)] == [3]


def test_early_stopping(tmp_path):
    # At lr 10 training diverges, so the validation error soon stops improving; with patience 1 the
    # first evaluation that is not a new best ends the run.
    trainer = _trainer(tmp_path, lr=10.0, warmup_steps=0, schedule="constant", patience=1, epochs=20, grad_clip=0.0)
    trainer.fit()
    rows = _history(tmp_path)
    assert len(rows) < 20
    values = [float(r["val_mse"]) for r in rows]
    assert values[-1] >= min(values[:-1])


def test_bf16_autocast_trains(tmp_path):
    best = _trainer(tmp_path, bf16=True, epochs=2).fit()
    assert best["val_mse"] == best["val_mse"]  # a number, not NaN


def test_metric_must_exist(tmp_path):
    with pytest.raises(KeyError, match="accuracy"):
        _trainer(tmp_path, metric="accuracy", epochs=1).fit()


@pytest.mark.slow
def test_compiled_model_trains_and_checkpoints_load(tmp_path):
    from attnkit.engine import load_weights

    trainer = _trainer(tmp_path, compile=True, epochs=1)
    trainer.fit()
    fresh = toy_model()
    load_weights(fresh, tmp_path / "model.safetensors")


def test_a_loss_that_becomes_nan_stops_training_with_a_clear_error(tmp_path):
    """The loss turns NaN at the third step: training stops there, before the weights change, and the
    checkpoint of the last evaluation stays on disk."""
    from attnkit.engine.trainer import TrainingDiverged

    class Diverging(ToyTask):
        calls = 0

        def loss(self, model, batch):
            Diverging.calls += 1
            loss, count = super().loss(model, batch)
            return (loss * float("nan") if Diverging.calls >= 3 else loss), count

    model = toy_model()
    config = TrainConfig(epochs=3, batch_size=8, lr=1e-2, warmup_steps=0, eval_every=2, metric="mse", progress=False)
    trainer = Trainer(
        model, Diverging(), config, tmp_path, toy_batches(64, shuffle=True), toy_batches(16, shuffle=False), Dist()
    )
    with pytest.raises(TrainingDiverged, match=r"training stopped at step 3: the loss became nan"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert (tmp_path / "last").is_dir()


def test_warm_up_takes_at_most_a_quarter_of_a_short_run(tmp_path):
    logged = []
    config = TrainConfig(epochs=3, batch_size=8, lr=1e-2, warmup_steps=100, metric="mse", progress=False)
    trainer = Trainer(
        toy_model(), ToyTask(), config, tmp_path, toy_batches(64, shuffle=True), None, Dist(), log=logged.append
    )
    assert trainer.total_steps == 24 and trainer.warmup_steps == 6
    assert any("warm-up of 6 steps instead of 100" in line for line in logged)
    long = TrainConfig(epochs=3, batch_size=8, lr=1e-2, warmup_steps=5, metric="mse", progress=False)
    assert (
        Trainer(toy_model(), ToyTask(), long, tmp_path, toy_batches(64, shuffle=True), None, Dist()).warmup_steps == 5
    )


def test_a_long_run_says_how_long_it_will_take(tmp_path, monkeypatch):
    """Timed over its first steps, a run longer than LONG_RUN_MINUTES prints one note with the estimate and
    the hint; a short one prints none."""
    for limit, expected in ((0.0, 1), (1e6, 0)):
        monkeypatch.setattr("attnkit.engine.trainer.LONG_RUN_MINUTES", limit)
        messages: list[str] = []
        trainer = _trainer(tmp_path / str(limit), epochs=1)  # 8 steps
        trainer.log, trainer.long_run_hint = messages.append, "try the small preset"
        trainer.fit()
        notes = [m for m in messages if m.startswith("note: at ")]
        assert len(notes) == expected
        if notes:
            assert "s per step on cpu, the 8 planned steps take about" in notes[0]
            assert notes[0].endswith("finish sooner; try the small preset)")
