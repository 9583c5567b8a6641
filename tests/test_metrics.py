"""Metrics against hand-computed values and scikit-learn's definitions."""

import pytest
import torch

from attnkit.metrics import classification_report, confusion_matrix


def test_confusion_and_report_by_hand():
    target = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    assert confusion_matrix(pred, target, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    report = classification_report(pred, target, 3)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["precision"] == pytest.approx([1.0, 0.5, 0.5])
    assert report["recall"] == pytest.approx([2 / 3, 0.5, 1.0])
    f1 = [2 * p * r / (p + r) for p, r in zip([1.0, 0.5, 0.5], [2 / 3, 0.5, 1.0], strict=True)]
    assert report["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert report["support"] == [3, 2, 1]


def test_absent_and_never_predicted_classes():
    target = torch.tensor([0, 0, 1])
    pred = torch.tensor([0, 0, 0])
    report = classification_report(pred, target, 3)  # class 2 absent from the targets
    assert report["precision"][1] == 0.0 and report["recall"][1] == 0.0
    assert report["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)
