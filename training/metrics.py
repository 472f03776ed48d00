"""Classification metrics, TweetEval style (macro-recall is the official sentiment metric)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from schemas import LABELS

IntArray = npt.NDArray[np.int64]


def confusion_matrix(y_true: IntArray, y_pred: IntArray) -> npt.NDArray[np.int64]:
    """Rows: true class, columns: predicted class, in :data:`schemas.LABELS` order."""
    n = len(LABELS)
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n).astype(np.int64)


def macro_recall(y_true: IntArray, y_pred: IntArray) -> float:
    """Mean per-class recall (classes absent from ``y_true`` count as 0)."""
    cm = confusion_matrix(y_true, y_pred)
    support = cm.sum(axis=1)
    return float(np.mean(np.divide(np.diag(cm), support, out=np.zeros(len(LABELS)), where=support > 0)))


def paired_bootstrap_win_rate(
    y_true: IntArray, challenger: IntArray, incumbent: IntArray, rounds: int = 1_000, seed: int = 0
) -> float:
    """Share of ``rounds`` resamples of the rows (with replacement, the same rows for both models) on
    which ``challenger`` has the higher macro-recall: how sure the data are that it is better."""
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
    """Accuracy, macro recall/F1, per-class precision/recall/F1/support and the confusion matrix."""
    cm = confusion_matrix(y_true, y_pred)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = int(cm.sum())
    return {
        "n": total,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(LABELS)
        },
        "labels": list(LABELS),
        "confusion_matrix": cm.tolist(),
    }


def label_distribution(y_pred: IntArray) -> dict[str, float]:
    """Share of each predicted class: the drift reference published with the model."""
    counts = np.bincount(y_pred, minlength=len(LABELS)).astype(np.float64)
    total = counts.sum()
    return {label: float(counts[i] / total) if total else 0.0 for i, label in enumerate(LABELS)}
