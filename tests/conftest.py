"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from tests.fixtures import make_texts, write_csv


@pytest.fixture
def news_files(tmp_path):
    """train.csv (120 rows) and test.csv (45 rows) with a header, three topics."""
    train = write_csv(tmp_path / "train.csv", make_texts(120, seed=1))
    test = write_csv(tmp_path / "test.csv", make_texts(45, seed=2))
    return train, test
