"""Load a sentiment model once and score many texts per call.

:meth:`Predictor.load` reads and checks the file in-process (:mod:`sentiment_model.model_file`) and
scores it with :class:`~sentiment_model.linear_scorer.LinearScorer` (the compiled kernel, the whole batch
at once, fastText-exact); fastText is loaded only for a complete file that scorer cannot reproduce
(:class:`~sentiment_model.fasttext_scorer.FastTextScorer`). :attr:`Predictor.scorer_name` says which
scores. Both feed the same clip-and-renormalise step.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from schemas import LABELS, Label
from sentiment_model.errors import ModelCannotExplainError, ModelLoadError, ModelNotFoundError
from sentiment_model.fasttext_scorer import FastTextScorer
from sentiment_model.linear_scorer import Explanation, LinearScorer, UnsupportedModelError
from sentiment_model.model_file import LABEL_PREFIX, read_model_file
from sentiment_model.normalize import normalize_batch
from sentiment_model.normalize import warm_up as warm_up_normalization
from sentiment_model.word_pulls import WordPulls

#: A text any working model scores: checked on every load, and by the API's ``GET /ready``.
PROBE_TEXT = "what a lovely day, thank you all"

log = logging.getLogger(__name__)

__all__ = ["LABEL_PREFIX", "PROBE_TEXT", "Predictor", "ScoredBatch"]


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """Scores of a batch, row i for text i.

    ``probabilities`` is ``(n, 3)`` in :data:`schemas.LABELS` order; each row is a distribution (sums to
    1). fastText's softmax can return 1.00001, so values are clipped first; a one-vs-all model
    (``loss=ova``) returns three independent sigmoids, so rows are then rescaled to sum to 1.
    """

    probabilities: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def label_ids(self) -> npt.NDArray[np.intp]:
        """Index into :data:`schemas.LABELS` of each row's winning class."""
        return np.asarray(self.probabilities.argmax(axis=1), dtype=np.intp)

    @property
    def labels(self) -> list[Label]:
        """The winning class of each row."""
        return [LABELS[i] for i in self.label_ids.tolist()]

    @property
    def scores(self) -> list[float]:
        """Probability of each row's winning class."""
        return [float(x) for x in self.probabilities.max(axis=1).tolist()]

    def score_dicts(self) -> list[dict[str, float]]:
        """All class probabilities of each row, keyed by label."""
        return [dict(zip(LABELS, row, strict=True)) for row in self.probabilities.tolist()]


class Predictor:
    """A loaded sentiment model. Thread-safe for prediction (neither scorer mutates while scoring)."""

    def __init__(self, scorer: LinearScorer | FastTextScorer, path: Path, scorer_reason: str = "") -> None:
        self.scorer = scorer
        """What scores: the compiled scorer, or fastText for a file it cannot reproduce."""
        self.path = path
        self.scorer_reason = scorer_reason
        """Why fastText scores (empty when the compiled scorer does)."""

    @property
    def scorer_name(self) -> str:
        """``"c"`` (the compiled kernel) or ``"fasttext"``: which code scores (for logs and metrics)."""
        return self.scorer.name

    @classmethod
    def load(cls, path: Path | str) -> Predictor:
        """Read ``path`` once, in this process, and prove it scores; raise :class:`ModelError` subclasses
        otherwise (a truncated or corrupt file is a :class:`ModelLoadError`, never a crash)."""
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} does not exist")
        try:
            predictor = cls(LinearScorer.from_file(path), path)
        except UnsupportedModelError as exc:
            reason = f"the compiled scorer does not support this file ({exc}); scoring with fastText"
            log.info("%s: %s", path, reason)
            predictor = cls(FastTextScorer.load(path), path, reason)
        else:
            log.info("%s: scored by the compiled scorer", path)
        predictor._probe()
        warm_up_normalization()  # its lazy tables, before the first post rather than with it
        return predictor

    @classmethod
    def load_fasttext(cls, path: Path | str) -> Predictor:
        """``path`` scored by fastText whatever the file (the reference for tests and benchmarks); the file
        is checked complete first, as by :meth:`load`."""
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} does not exist")
        with contextlib.suppress(UnsupportedModelError):  # complete, just not ours to score
            read_model_file(path)
        predictor = cls(FastTextScorer.load(path), path, "asked for fastText")
        predictor._probe()
        return predictor

    def _probe(self) -> None:
        probe = self.scorer.fasttext_probabilities([PROBE_TEXT])[0]
        if not (np.isfinite(probe).all() and probe.sum() > 0):
            raise ModelLoadError(f"model file {self.path} is corrupt: a probe prediction failed")

    def predict_normalized(self, lines: Sequence[str]) -> ScoredBatch:
        """Score texts that already went through :func:`normalize` (one model call for all)."""
        return _distribution(self.scorer.fasttext_probabilities(lines))

    def explain_normalized(self, line: str) -> Explanation:
        """Per-token contributions to the logits of one normalised text (see :class:`Explanation`);
        :class:`ModelCannotExplainError` when this model is scored by fastText."""
        if not isinstance(self.scorer, LinearScorer):
            raise ModelCannotExplainError(
                f"this model cannot explain its scores: {self.scorer_reason or 'it is scored by fastText'}"
            )
        return self.scorer.explain(line)

    def word_pulls(self, lines: Sequence[str]) -> WordPulls:
        """Each normalised line's words and each word's pull towards negative (``> 0``) over positive:
        exact with the compiled scorer, read through fastText's word vectors otherwise."""
        return self.scorer.word_pulls(lines)

    def oov_counts(self, lines: Sequence[str]) -> tuple[int, int]:
        """(tokens the model has no vector for, all tokens) of normalised ``lines``, tokenised as the
        model reads them."""
        return self.scorer.oov_counts(lines)

    def oov_rate(self, lines: Sequence[str]) -> float:
        """Share of the tokens of normalised ``lines`` the model has no vector for."""
        missing, total = self.oov_counts(lines)
        return missing / total if total else 0.0

    def predict(self, texts: Sequence[str]) -> ScoredBatch:
        """Normalise and score a batch of raw texts in one model call."""
        return self.predict_normalized(normalize_batch(texts))


def _distribution(raw: npt.NDArray[np.float64]) -> ScoredBatch:
    """fastText's probabilities as distributions: softmax can say 1.00001, ova's three sigmoids do
    not sum to 1; a row without any prediction stays zeros."""
    np.clip(raw, 0.0, 1.0, out=raw)
    totals = raw.sum(axis=1, keepdims=True)
    np.divide(raw, totals, out=raw, where=totals > 0)
    return ScoredBatch(raw)
