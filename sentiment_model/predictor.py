"""Load a fastText model once and score many texts per call.

Scoring goes through :class:`sentiment_model.linear_scorer.LinearScorer` (a C loop or numpy, the whole
batch at once, fastText-exact) when the file is one it reproduces, else through fastText's own ``predict``;
:attr:`Predictor.scorer_name` says which. Both feed the same clip-and-renormalise step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fasttext
import numpy as np
import numpy.typing as npt

from schemas import LABELS, Label
from sentiment_model.errors import ModelCannotExplainError, ModelLoadError, ModelNotFoundError
from sentiment_model.linear_scorer import Explanation, LinearScorer, UnsupportedModelError
from sentiment_model.normalize import normalize_batch
from sentiment_model.normalize import warm_up as warm_up_normalization
from sentiment_model.preflight import check_in_child

LABEL_PREFIX = "__label__"
_EXPECTED_LABELS = frozenset(LABEL_PREFIX + label for label in LABELS)
_COLUMN = {LABEL_PREFIX + label: i for i, label in enumerate(LABELS)}
#: A text any working model scores: checked on every load, and by the API's ``GET /ready``.
PROBE_TEXT = "what a lovely day, thank you all"
#: Scored both ways at load: the numpy scorer is used only if it agrees with fastText on these.
_AGREEMENT_PROBES = (
    PROBE_TEXT,
    "",
    "worst service ever , never again __lexneg__",
    "__label__positive ok </s> ignored",
    "unseenwordxyz in a bigram with 😀 and ünïcödé",
)
_AGREEMENT_TOLERANCE = 1e-5

log = logging.getLogger(__name__)

# fastText's Python wrapper prints a deprecation notice on every load_model; it says nothing useful here.
fasttext.FastText.eprint = lambda *_args, **_kwargs: None


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
    """A loaded sentiment model. Thread-safe for prediction (fastText's predict does not mutate)."""

    def __init__(
        self, model: Any, path: Path, scorer: LinearScorer | None = None, scorer_reason: str = ""
    ) -> None:
        self._model = model
        self.path = path
        self._vocabulary: frozenset[str] | None = None
        self.scorer = scorer
        """The numpy scorer, or None when the file needs fastText (then :attr:`scorer_reason` says why)."""
        self.scorer_reason = scorer_reason if scorer is None else ""

    @property
    def scorer_name(self) -> str:
        """``"numpy"`` or ``"fasttext"``: which code scores (for logs and metrics)."""
        return LinearScorer.name if self.scorer is not None else "fasttext"

    def vocabulary(self) -> frozenset[str]:
        """The words the model has vectors for (to measure the out-of-vocabulary rate)."""
        if self._vocabulary is None:
            self._vocabulary = frozenset(self._model.get_words(on_unicode_error="replace"))
        return self._vocabulary

    @classmethod
    def load(cls, path: Path | str) -> Predictor:
        """Load ``path`` and prove it scores; raise :class:`ModelError` subclasses otherwise.

        The file is first loaded in a child process (see :mod:`sentiment_model.preflight`): a corrupt
        file may crash fastText, and that must not take this process down.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} does not exist")
        check_in_child(path)
        predictor = cls.load_unchecked(path)
        warm_up_normalization()  # its lazy tables, before the first post rather than with it
        return predictor

    @classmethod
    def load_unchecked(cls, path: Path) -> Predictor:
        """Load without the child-process check: only for files already checked (or in the child)."""
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} does not exist")
        try:
            model = fasttext.load_model(str(path))
        except (ValueError, RuntimeError, MemoryError) as exc:
            raise ModelLoadError(f"model file {path} is not a fastText model: {exc}") from exc
        found = set(model.labels)
        if found != _EXPECTED_LABELS:
            raise ModelLoadError(
                f"model file {path} has labels {sorted(found)}, expected {sorted(_EXPECTED_LABELS)}"
            )
        predictor = cls(model, path)
        # A truncated file loads without complaint but predicts nothing: score a probe to be sure.
        probe = predictor._raw_predict([PROBE_TEXT])
        if len(probe[0][0]) != len(LABELS) or not all(math.isfinite(p) for p in probe[1][0]):
            raise ModelLoadError(f"model file {path} is truncated or corrupt: a probe prediction failed")
        scorer, reason = _numpy_scorer(predictor, path)
        return cls(model, path, scorer, reason)

    def save(self, path: Path) -> None:
        """Write the model to ``path`` (same format it was loaded from)."""
        self._model.save_model(str(path))

    def _raw_predict(self, lines: list[str]) -> tuple[list[list[str]], list[npt.NDArray[np.float32]]]:
        labels, probs = self._model.predict(lines, k=len(LABELS), threshold=0.0)
        return labels, probs

    def predict_normalized(self, lines: Sequence[str]) -> ScoredBatch:
        """Score texts that already went through :func:`normalize` (one model call for all)."""
        if self.scorer is None:
            return self.predict_normalized_fasttext(lines)
        return _distribution(self.scorer.fasttext_probabilities(lines))

    def predict_normalized_fasttext(self, lines: Sequence[str]) -> ScoredBatch:
        """:meth:`predict_normalized` through fastText's own predict, whatever :attr:`scorer_name` is."""
        return _distribution(self._fasttext_probabilities(lines))

    def _fasttext_probabilities(self, lines: Sequence[str]) -> npt.NDArray[np.float64]:
        out = np.zeros((len(lines), len(LABELS)), dtype=np.float64)
        if not lines:
            return out
        labels, probs = self._raw_predict(list(lines))
        column = _COLUMN
        for row, (row_labels, row_probs) in enumerate(zip(labels, probs, strict=True)):
            for label, prob in zip(row_labels, row_probs.tolist(), strict=True):
                out[row, column[label]] = prob
        return out

    def explain_normalized(self, line: str) -> Explanation:
        """Per-token contributions to the logits of one normalised text (see :class:`Explanation`);
        :class:`ModelCannotExplainError` when this model is scored by fastText."""
        if self.scorer is None:
            raise ModelCannotExplainError(
                f"this model cannot explain its scores: {self.scorer_reason or 'it is scored by fastText'}"
            )
        return self.scorer.explain(line)

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


def _numpy_scorer(predictor: Predictor, path: Path) -> tuple[LinearScorer | None, str]:
    """The numpy scorer for ``path`` if it reproduces fastText on the probes; else None and why."""
    try:
        scorer = LinearScorer.from_file(path)
    except UnsupportedModelError as exc:
        reason = f"the numpy scorer does not support this file ({exc}); scoring with fastText"
        log.info("%s: %s", path, reason)
        return None, reason
    ours = scorer.fasttext_probabilities(_AGREEMENT_PROBES)
    theirs = predictor._fasttext_probabilities(_AGREEMENT_PROBES)
    gap = float(np.abs(ours - theirs).max())
    if gap > _AGREEMENT_TOLERANCE:
        reason = f"the numpy scorer differs from fastText by {gap:.2g} on the load probes; using fastText"
        log.warning("%s: %s", path, reason)
        return None, reason
    log.info("%s: scored by the numpy scorer (%s loss, %s kernel)", path, scorer.loss, scorer.kernel)
    return scorer, ""
