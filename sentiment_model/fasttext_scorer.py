"""fastText's own ``predict``: the fallback scorer for model files the compiled scorer cannot reproduce
(char n-grams, other losses, a quantized output matrix), and the reference the tests and benchmarks
compare with. Loaded only for a file :func:`sentiment_model.model_file.read_model_file` has checked
complete, so fastText's trusting loader never meets a truncated or corrupt one.

Token pulls (the crisis terms) are read through fastText's public API: a fastText classifier averages
the input vectors of a line's ``N`` ids (its words, word n-grams and end-of-line) into ``h`` and scores
``logits = O h``. So ``logit_neg - logit_pos = u . h`` with ``u = O_neg - O_pos``, and word ``w``
contributes ``u . vec(w) / N``. A quantized model does not give out ``O``, but ``u`` can be solved for:
for any line, ``log p_neg - log p_pos = u . h`` (softmax; for one-vs-all ``logit(p_neg) - logit(p_pos)``),
``h`` is ``get_sentence_vector`` of the line, and a least squares fit over unsaturated probe lines
recovers ``u`` (tests/test_crisis.py checks it against the model's own log-odds). Word n-gram ids
are not tokens and are left out of the per-token pull.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from schemas import LABELS
from sentiment_model.model_file import LABEL_PREFIX
from sentiment_model.word_pulls import WordPulls

log = logging.getLogger(__name__)

_SATURATED = 1e-3  # fastText floors probabilities near 1e-5: such probes carry no log-odds information
_MAX_FIT_ERROR = 0.05  # largest acceptable error of the fitted log-odds on the probes
_CACHE_LIMIT = 200_000
_PROBES_PER_DIM = 20
_COLUMN = {LABEL_PREFIX + label: i for i, label in enumerate(LABELS)}


class TokenPull:
    """``u`` of one model and a cache of ``u . vec(word)`` per word."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._tokens = _Tokens(model)
        self._cache: dict[str, float] = {}
        self.direction = self._fit(model)

    @staticmethod
    def _fit(model: Any) -> npt.NDArray[np.float64] | None:
        words = [w for w in model.get_words(on_unicode_error="replace") if w != "</s>"]
        dim = model.get_dimension()
        rng = np.random.default_rng(0)  # probes: lines of random vocabulary words (short lines saturate)
        vocabulary = np.asarray(words, dtype=object)
        probes = [" ".join(rng.choice(vocabulary, size=12).tolist()) for _ in range(_PROBES_PER_DIM * dim)]
        labels, probs = model.predict(probes, k=3, threshold=0.0)
        rows, softmax, ova = [], [], []
        for line, names, values in zip(probes, labels, probs, strict=True):
            p = dict(zip(names, values.tolist(), strict=True))
            neg, pos = p.get("__label__negative", 0.0), p.get("__label__positive", 0.0)
            if min(neg, pos) < _SATURATED or max(neg, pos) > 1 - _SATURATED:
                continue
            rows.append(model.get_sentence_vector(line))
            softmax.append(np.log(neg) - np.log(pos))
            ova.append(np.log(neg / (1 - neg)) - np.log(pos / (1 - pos)))
        if len(rows) < 2 * dim:
            log.warning("only %d unsaturated probes to read token pulls from: complaint terms off", len(rows))
            return None
        h = np.asarray(rows, dtype=np.float64)
        best: tuple[float, npt.NDArray[np.float64]] | None = None
        for target in (np.asarray(softmax), np.asarray(ova)):
            u, *_ = np.linalg.lstsq(h, target, rcond=None)
            error = float(np.abs(h @ u - target).max())
            if best is None or error < best[0]:
                best = (error, u)
        assert best is not None
        if best[0] > _MAX_FIT_ERROR:
            log.warning("log-odds not linear in the hidden vector (error %.3f): complaint terms off", best[0])
            return None
        return best[1]

    def word(self, word: str) -> float:
        """``u . vec(word)``: the word's pull before dividing by the line's length."""
        value = self._cache.get(word)
        if value is None:
            assert self.direction is not None
            value = self._cache[word] = float(self._model.get_word_vector(word) @ self.direction)
        return value

    def batch(self, lines: Sequence[str]) -> WordPulls:
        """Tokens of each normalised line and each token's pull (all 0 when the fit failed)."""
        tokens = [self._tokens.words(line) for line in lines]
        unscored = WordPulls.from_tokens(tokens, np.zeros(sum(map(len, tokens))))
        if self.direction is None:
            return unscored
        if len(self._cache) + len(unscored.words) > _CACHE_LIMIT:  # unbounded OOV words: start over
            self._cache.clear()
        per_word = np.array([self.word(w) for w in unscored.words], dtype=np.float64)
        lengths = unscored.per_line
        flat = per_word[unscored.word_index] / np.repeat(lengths + 1, lengths)
        return WordPulls(unscored.words, unscored.word_index, flat, lengths)


class _Tokens:
    """A line's tokens as fastText reads them (``get_line``: its separators, labels left out)."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def words(self, line: str) -> list[str]:
        return [w for w in self._model.get_line(line.replace("\n", " "))[0] if w != "</s>"]


class FastTextScorer:
    """A model scored by fastText's ``predict`` (see the module docstring)."""

    name: Final = "fasttext"
    """What scores (for logs and metrics)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        """fastText's own model object."""
        self._tokens = _Tokens(model)
        self._pull: TokenPull | None = None

    @classmethod
    def load(cls, path: Path) -> FastTextScorer:
        """fastText's load of a file already checked complete (:func:`read_model_file`). The library is
        imported here, not with this module: a worker whose file the compiled scorer reads never loads it."""
        import fasttext

        # The wrapper prints a deprecation notice on every load_model; it says nothing useful here.
        fasttext.FastText.eprint = lambda *_args, **_kwargs: None
        return cls(fasttext.load_model(str(path)))

    def fasttext_probabilities(self, lines: Sequence[str]) -> npt.NDArray[np.float64]:
        """What fastText's ``predict(lines, k=3)`` returns, as an ``(n, 3)`` array in LABELS order."""
        out = np.zeros((len(lines), len(LABELS)), dtype=np.float64)
        if not lines:
            return out
        labels, probs = self.model.predict(list(lines), k=len(LABELS), threshold=0.0)
        for row, (row_labels, row_probs) in enumerate(zip(labels, probs, strict=True)):
            for label, prob in zip(row_labels, row_probs.tolist(), strict=True):
                out[row, _COLUMN[label]] = prob
        return out

    def oov_counts(self, lines: Sequence[str]) -> tuple[int, int]:
        """(tokens outside the vocabulary, all tokens) of ``lines``, tokenised as fastText reads them."""
        missing = total = 0
        for line in lines:
            words = self._tokens.words(line)
            total += len(words)
            missing += sum(1 for word in words if self.model.get_word_id(word) < 0)
        return missing, total

    def word_pulls(self, lines: Sequence[str]) -> WordPulls:
        """:meth:`TokenPull.batch` (the direction fitted on first use)."""
        if self._pull is None:
            self._pull = TokenPull(self.model)
        return self._pull.batch(lines)
