"""Drift: the live predicted-label mix and OOV rate over a sliding window, against the model's reference.

Pure: no metrics registry. The worker's drift observer (:mod:`worker.observers`) sets the gauges from
what :class:`DriftMonitor` returns."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas import LABELS
from sentiment_model.drift import as_vector, js_divergence, psi, shares

log = logging.getLogger("worker.drift")

#: (tokens outside the vocabulary, all tokens) of some normalised lines.
OovCounter = Callable[[Sequence[str]], tuple[int, int]]


def _no_oov(lines: Sequence[str]) -> tuple[int, int]:
    return 0, 0


@dataclass(frozen=True, slots=True)
class DriftReference:
    """What a model's metrics.json says its predictions looked like on val."""

    label_shares: list[float] | None  # None: no reference distribution (label drift is off)
    oov_rate: float  # NaN when unknown, never 0: "live minus reference" must not look like drift


@dataclass(frozen=True, slots=True)
class DriftReading:
    """The drift window after one batch."""

    records: int
    label_shares: list[float]  # live predicted-label shares over the window
    oov_rate: float | None  # None until the window holds min_records predictions and a token was counted
    jsd: float | None  # None without a reference or below ``min_records``
    psi: float | None


class DriftMonitor:
    """Keeps the last ``window`` predictions (per batch, so the cost is per batch, not per record) and
    measures the distance of their label mix from the reference, and the live OOV rate.

    OOV is measured on every ``oov_sample``-th text: it is a rate, and the full count would cost as much
    as a second tokenisation of every post.
    """

    def __init__(self, window: int, min_records: int, oov_sample: int) -> None:
        self.window = window
        self.min_records = min_records
        self.oov_sample = oov_sample
        self._batches: deque[tuple[npt.NDArray[np.int64], int, int]] = deque()  # counts, oov, tokens
        self._counts = np.zeros(len(LABELS), np.int64)
        self._oov = self._tokens = 0
        self._reference: list[float] | None = None
        self._oov_counts: OovCounter = _no_oov

    def set_model(self, reference: dict[str, Any] | None, oov_counts: OovCounter) -> DriftReference:
        """A (new) model: its reference from metrics.json and its OOV count
        (:meth:`sentiment_model.Predictor.oov_counts`). The window restarts."""
        self._batches.clear()
        self._counts[:] = 0
        self._oov = self._tokens = 0
        self._oov_counts = oov_counts
        distribution = (reference or {}).get("val_prediction_distribution")
        self._reference = as_vector(distribution) if isinstance(distribution, dict) else None
        if self._reference is None:
            log.warning("the model has no reference label distribution (metrics.json): label drift is off")
        oov = (reference or {}).get("oov_token_rate")
        return DriftReference(self._reference, float(oov) if isinstance(oov, int | float) else math.nan)

    def observe(self, label_ids: npt.NDArray[np.intp], normalized: list[str]) -> DriftReading:
        """Add one batch's predictions; the window as it is now."""
        counts = np.bincount(label_ids, minlength=len(LABELS)).astype(np.int64)
        oov, tokens = self._oov_counts(normalized[:: self.oov_sample])
        self._batches.append((counts, oov, tokens))
        self._counts += counts
        self._oov += oov
        self._tokens += tokens
        # Drop whole old batches while the rest still fills the window.
        while len(self._batches) > 1 and self._counts.sum() - self._batches[0][0].sum() >= self.window:
            old, old_oov, old_tokens = self._batches.popleft()
            self._counts -= old
            self._oov -= old_oov
            self._tokens -= old_tokens
        total = int(self._counts.sum())
        live = shares(self._counts.tolist())
        enough = total >= self.min_records  # a few posts' OOV share is noise (OovRateHigh went pending on it)
        reference = self._reference if enough else None
        return DriftReading(
            total,
            live,
            self._oov / self._tokens if self._tokens and enough else None,
            js_divergence(live, reference) if reference is not None else None,
            psi(reference, live) if reference is not None else None,
        )
