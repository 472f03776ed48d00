"""Metrics against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import confusion_matrix, evaluate, label_distribution, macro_recall


def test_hand_computed_example() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2], dtype=np.int64)
    y_pred = np.array([0, 0, 1, 2, 1, 0, 2, 2, 2, 1], dtype=np.int64)
    assert confusion_matrix(y_true, y_pred).tolist() == [[2, 1, 1], [1, 1, 0], [0, 1, 3]]
    report = evaluate(y_true, y_pred)
    # recalls 2/4, 1/2, 3/4; precisions 2/3, 1/3, 3/4
    assert report["macro_recall"] == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    assert macro_recall(y_true, y_pred) == pytest.approx(report["macro_recall"])
    f1 = [2 * p * r / (p + r) for p, r in ((2 / 3, 0.5), (1 / 3, 0.5), (0.75, 0.75))]
    assert report["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["per_class"]["negative"] == pytest.approx(
        {"precision": 2 / 3, "recall": 0.5, "f1": f1[0], "support": 4}
    )


def test_missing_class_counts_as_zero_recall() -> None:
    y = np.array([0, 0, 1], dtype=np.int64)
    assert macro_recall(y, y) == pytest.approx(2 / 3)


def test_label_distribution() -> None:
    assert label_distribution(np.array([0, 2, 2, 2], dtype=np.int64)) == {
        "negative": 0.25,
        "neutral": 0.0,
        "positive": 0.75,
    }
