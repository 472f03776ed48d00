"""training.metrics gives scikit-learn's numbers; the vectorised bootstrap agrees with it per resample."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, f1_score, recall_score

from schemas import LABELS
from training.metrics import evaluate, macro_recall, paired_bootstrap_win_rate


def predictions(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two noisy predictors of them (70% and 65% copied)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    noisy = [np.where(rng.random(n) < keep, truth, rng.integers(0, 3, n)) for keep in (0.7, 0.65)]
    return truth, noisy[0], noisy[1]


def test_evaluate_reports_scikit_learns_numbers() -> None:
    truth, predicted, _ = predictions(0)
    report = evaluate(truth, predicted)
    assert report["macro_recall"] == recall_score(truth, predicted, average="macro")
    assert report["macro_f1"] == f1_score(truth, predicted, average="macro")
    assert report["confusion_matrix"] == confusion_matrix(truth, predicted).tolist()
    expected = classification_report(truth, predicted, target_names=LABELS, output_dict=True)
    assert report["accuracy"] == expected["accuracy"] and report["n"] == len(truth)
    assert report["macro_precision"] == expected["macro avg"]["precision"]
    for label in LABELS:
        assert report["per_class"][label]["f1"] == expected[label]["f1-score"]
        assert report["per_class"][label]["support"] == expected[label]["support"]


def test_a_class_absent_from_the_sample_counts_as_zero_not_as_an_error() -> None:
    truth = np.array([0, 0, 1, 1])
    predicted = np.array([0, 1, 1, 1])
    report = evaluate(truth, predicted)
    assert report["per_class"]["positive"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["macro_recall"] == macro_recall(truth, predicted) == (1.0 / 2 + 1.0) / 3
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_the_bootstrap_counts_wins_as_scikit_learn_would() -> None:
    truth, better, worse = predictions(1)
    rounds = 200
    rows = np.random.default_rng(5).integers(0, len(truth), size=(rounds, len(truth)))
    labels = list(range(len(LABELS)))
    wins = [
        recall_score(truth[r], better[r], labels=labels, average="macro", zero_division=0)
        > recall_score(truth[r], worse[r], labels=labels, average="macro", zero_division=0)
        for r in rows
    ]
    assert paired_bootstrap_win_rate(truth, better, worse, rounds=rounds, seed=5) == np.mean(wins)
    assert paired_bootstrap_win_rate(truth, better, better, rounds=rounds, seed=5) == 0.0
