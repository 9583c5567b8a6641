"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures import make_texts, write_csv


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
