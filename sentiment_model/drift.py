"""Distances between label distributions: one definition for training (which publishes the reference in
``metrics.json``) and serving (which compares live traffic with it). The out-of-vocabulary rate is the
model's own (:meth:`sentiment_model.Predictor.oov_rate`: its tokeniser, its vocabulary)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from schemas import LABELS

_EPSILON = 1e-6  # keeps log() finite when a class is absent from one side


def as_vector(distribution: Mapping[str, float]) -> list[float]:
    """A ``{label: share}`` mapping as shares in :data:`LABELS` order, normalised to sum to 1."""
    values = [max(0.0, float(distribution.get(label, 0.0))) for label in LABELS]
    total = sum(values)
    return [v / total for v in values] if total > 0 else [1.0 / len(LABELS)] * len(LABELS)


def shares(counts: Sequence[float]) -> list[float]:
    """Counts per label as shares (uniform when there are none)."""
    total = sum(counts)
    return [c / total for c in counts] if total > 0 else [1.0 / len(counts)] * len(counts)


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits: 0 for equal distributions, 1 at most. Symmetric and finite."""
    middle = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: Sequence[float], y: Sequence[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, y, strict=True) if a > 0)

    return max(0.0, 0.5 * kl(p, middle) + 0.5 * kl(q, middle))


def psi(reference: Sequence[float], live: Sequence[float]) -> float:
    """Population stability index: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift (rule of thumb)."""
    total = 0.0
    for r, x in zip(reference, live, strict=True):
        r, x = max(r, _EPSILON), max(x, _EPSILON)
        total += (x - r) * math.log(x / r)
    return total
