"""Classification metrics, TweetEval style (macro-recall is the official sentiment metric), computed by
scikit-learn over the labels in :data:`schemas.LABELS` order."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

from schemas import LABELS

IntArray = npt.NDArray[np.int64]
#: Label ids in :data:`schemas.LABELS` order: every class is counted, also one absent from a sample.
LABEL_IDS = list(range(len(LABELS)))


def confusion_matrix(y_true: IntArray, y_pred: IntArray) -> npt.NDArray[np.int64]:
    """Rows: true class, columns: predicted class, in :data:`schemas.LABELS` order."""
    return np.asarray(skm.confusion_matrix(y_true, y_pred, labels=LABEL_IDS), dtype=np.int64)


def macro_recall(y_true: IntArray, y_pred: IntArray) -> float:
    """Mean per-class recall (classes absent from ``y_true`` count as 0)."""
    return float(skm.recall_score(y_true, y_pred, labels=LABEL_IDS, average="macro", zero_division=0))


def macro_f1(y_true: IntArray, y_pred: IntArray) -> float:
    """Mean per-class F1 (a class never predicted nor present counts as 0)."""
    return float(skm.f1_score(y_true, y_pred, labels=LABEL_IDS, average="macro", zero_division=0))


def paired_bootstrap_win_rate(
    y_true: IntArray, challenger: IntArray, incumbent: IntArray, rounds: int = 1_000, seed: int = 0
) -> float:
    """Share of ``rounds`` resamples of the rows (with replacement, the same rows for both models) on
    which ``challenger`` has the higher macro-recall: how sure the data are that it is better.

    Counted here for all resamples at once rather than by one ``recall_score`` call each, which was two
    orders of magnitude slower; a test checks the count against scikit-learn resample by resample.
    """
    n, k = len(LABELS), len(y_true)
    rows = np.random.default_rng(seed).integers(0, k, size=(rounds, k))
    truth = y_true[rows]
    support = np.stack([(truth == c).sum(axis=1) for c in range(n)], axis=1)

    def recalls(pred: IntArray) -> npt.NDArray[np.float64]:
        hits = pred[rows] == truth
        correct = np.stack([(hits & (truth == c)).sum(axis=1) for c in range(n)], axis=1)
        per_class = np.divide(correct, support, out=np.zeros(support.shape), where=support > 0)
        return np.asarray(per_class.mean(axis=1), dtype=np.float64)

    return float((recalls(challenger) > recalls(incumbent)).mean())


def evaluate(y_true: IntArray, y_pred: IntArray) -> dict[str, Any]:
    """Accuracy, macro recall/F1/precision, per-class precision/recall/F1/support and the confusion
    matrix: scikit-learn's ``classification_report``, ``recall_score``/``f1_score`` (macro) and
    ``confusion_matrix``."""
    report: dict[str, Any] = skm.classification_report(
        y_true, y_pred, labels=LABEL_IDS, target_names=list(LABELS), output_dict=True, zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_recall": macro_recall(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "macro_precision": float(report["macro avg"]["precision"]),
        "per_class": {
            label: {
                "precision": float(report[label]["precision"]),
                "recall": float(report[label]["recall"]),
                "f1": float(report[label]["f1-score"]),
                "support": int(report[label]["support"]),
            }
            for label in LABELS
        },
        "labels": list(LABELS),
        "confusion_matrix": confusion_matrix(y_true, y_pred).tolist(),
    }


def label_distribution(y_pred: IntArray) -> dict[str, float]:
    """Share of each predicted class: the drift reference published with the model."""
    counts = np.bincount(y_pred, minlength=len(LABELS)).astype(np.float64)
    total = counts.sum()
    return {label: float(counts[i] / total) if total else 0.0 for i, label in enumerate(LABELS)}
