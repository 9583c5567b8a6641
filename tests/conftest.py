"""Shared pytest fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.fixtures import make_texts, write_csv

ROOT = Path(__file__).resolve().parent.parent
RELEASE_RUNS = ROOT / "tests" / "fixtures" / "runs"


@pytest.fixture
def copy_run(tmp_path, monkeypatch):
    """A function: the release's fixture run of a task (tests/fixtures/runs), copied into tmp_path, on
    one torch thread (tiny models run fastest so); the working directory is the repository root, where
    the data paths saved in the runs point."""
    monkeypatch.chdir(ROOT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def copy(task: str) -> Path:
        target = tmp_path / task
        shutil.copytree(RELEASE_RUNS / task, target)
        return target

    yield copy
    torch.set_num_threads(threads)


@pytest.fixture
def news_files(tmp_path):
    """train.csv (120 rows) and test.csv (45 rows) with a header, three topics."""
    train = write_csv(tmp_path / "train.csv", make_texts(120, seed=1))
    test = write_csv(tmp_path / "test.csv", make_texts(45, seed=2))
    return train, test


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
