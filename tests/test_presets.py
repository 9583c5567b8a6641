"""Every preset under configs/ names only known options and builds its task's options and model."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnkit.engine.config import TrainConfig
from attnkit.options import build, check_known, load_preset
from attnkit.tasks.registry import all_tasks

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PRESETS = sorted(CONFIGS.glob("*/*.yaml"))
# What a preset leaves to the command line: the data it trains on.
DATA = {
    "classify": {"train": "train.tsv"},
    "mlm": {"text": "corpus.txt"},
    "recommend": {"data": "ratings.txt"},
    "translate": {"train_src": "train.de", "train_tgt": "train.en"},
    "lm": {"text": "input.txt"},
    "vision": {},
}


def test_every_task_has_presets():
    assert {path.parent.name for path in PRESETS} == set(all_tasks())


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_preset_builds(path):
    task = path.parent.name
    spec = all_tasks()[task]
    options_cls = spec.options
    preset = load_preset(str(path))
    check_known(preset, options_cls, TrainConfig)
    given = {} if "dataset" in preset else dict(DATA[task])
    options = build(options_cls, preset, given)
    config = build(TrainConfig, spec.train_defaults, preset)
    for key, value in preset.items():  # the preset's values reach the options or the engine unchanged
        assert getattr(options, key, getattr(config, key, None)) == value, key
