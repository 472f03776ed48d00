"""Score a word-only linear fastText model with the compiled kernel, a whole batch at a time, exactly as
fastText does.

fastText's ``predict`` holds the GIL and builds Python objects per row; for the published model (word
tokens plus word bigrams, projected to 3 dims, quantized) a text's scores are only ``output @ mean(rows)``
followed by a sigmoid (``loss=ova``) or a softmax. The file is read by :mod:`sentiment_model.model_file`;
the tokenise / hash / look-up / sum loop is ``sentiment_model/_fastlinear.c`` (its header states
fastText's rules it follows), the GIL released; the scale, output matrix and sigmoid or softmax after it
are numpy. Probabilities agree with fastText's to float32 rounding (1e-7) and labels always agree (the
tests hold it to fastText on all of TweetEval and on fuzzed strings):

* rows are summed in fastText's order in float32, multiplied by ``float32(1 / rows)``, dotted with each
  output row sequentially in float32; ``ova`` uses fastText's 512-entry sigmoid table over [-8, 8], and
  the result goes through fastText's ``exp(log(p + 1e-5))``. A text with no row gets no prediction.

Without the compiled kernel (a build without a C compiler) :meth:`LinearScorer.from_file` declines with
:class:`UnsupportedModelError` and fastText scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from schemas import LABELS
from sentiment_model.model_file import (
    EOS,
    LABEL_PREFIX,
    Loss,
    ModelFile,
    UnsupportedModelError,
    read_model_file,
)
from sentiment_model.word_pulls import WordPulls

try:  # built from _fastlinear.c by the package build; without it fastText scores
    from sentiment_model import _fastlinear
except ImportError:  # pragma: no cover - depends on the build
    _fastlinear = None  # type: ignore[assignment]

__all__ = ["Explanation", "LinearScorer", "UnsupportedModelError"]

_SIGMOID_TABLE_SIZE, _MAX_SIGMOID = 512, 8
_LABEL = -2  # the kernel's code of a label key (word ids are >= 0)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one text got its scores.

    Identity (checked by the tests): ``logits[c] == sum(t[1][c] for t in tokens)`` to float32 rounding,
    where each token's contribution is ``output_row_c . input_row / number_of_rows``; repeated tokens are
    merged (their contributions added). ``probabilities = LinearScorer.scores_from_logits(logits)``.
    Word n-grams appear as ``"w1 w2"``; ``</s>`` is fastText's end-of-text token. Words outside the model
    and n-grams it does not keep add nothing and are not listed. No row at all: ``tokens == []``,
    zero logits and zero probabilities (fastText makes no prediction).
    """

    tokens: list[tuple[str, tuple[float, float, float]]]
    logits: tuple[float, float, float]


def _sigmoid_table() -> npt.NDArray[np.float32]:
    """loss.cc's table: entry i is sigmoid(float32(16 i) / 512 - 8), via float32 exp."""
    out = np.empty(_SIGMOID_TABLE_SIZE + 1, dtype=np.float32)
    for i in range(_SIGMOID_TABLE_SIZE + 1):
        x = np.float32(np.float32(i * 2 * _MAX_SIGMOID) / np.float32(_SIGMOID_TABLE_SIZE)) - np.float32(8)
        e = np.float32(math.exp(-float(x)))  # std::exp(float): float32 result
        out[i] = np.float32(1.0 / (1.0 + float(e)))
    return out


def _as_bytes(lines: Sequence[str]) -> list[bytes]:
    """Lines as the kernel reads a str without a UTF-8 form (a lone surrogate): its surrogatepass bytes."""
    return [line.encode("utf-8", "surrogatepass") for line in lines]


class LinearScorer:
    """A loaded word-only fastText classifier scored by the compiled kernel (``from_file``; thread-safe,
    read-only)."""

    name: Final = "c"
    """What scores (for logs and metrics): the compiled kernel."""

    def __init__(self, model: ModelFile) -> None:
        if _fastlinear is None:
            raise UnsupportedModelError("the compiled kernel sentiment_model._fastlinear is not built")
        self.loss: Loss = model.loss
        self.dim = int(model.table.shape[1])
        self._words = model.words
        self._nwords = len(model.words)
        table, bucket_rows = model.table, model.bucket_rows
        if bucket_rows is not None:
            # fastText numbers a pruned file's n-gram rows by n-gram count, not by bucket: the rows put in
            # bucket order once, so that the kernel reads a row as nwords + the rank of its kept bucket
            # (a rank map 1/16 the size of the bucket map, and no second table in the kernel).
            kept = np.flatnonzero(bucket_rows >= 0)
            table = np.concatenate((table[: self._nwords], table[bucket_rows[kept]]))
            bucket_rows = bucket_rows.copy()
            bucket_rows[kept] = self._nwords + np.arange(kept.size, dtype=np.int32)
        self._table = table
        label_bytes = [(LABEL_PREFIX + label).encode() for label in LABELS]
        self._output = np.ascontiguousarray(
            model.output[[model.labels.index(label) for label in label_bytes]]
        )
        self._sigmoid = _sigmoid_table()
        self._eos_known = EOS.encode() in model.words
        self._pull: npt.NDArray[np.float64] | None = None
        self._texts: dict[int, str] = {}
        self._kernel = _fastlinear.Kernel(
            [*model.words, *model.labels],
            [*range(self._nwords), *([_LABEL] * len(model.labels))],
            model.word_ngrams,
            model.bucket,
            self._nwords,
            bucket_rows,
            table,
            self.dim,
        )

    @classmethod
    def from_file(cls, path: Path | str) -> LinearScorer:
        """Read ``path``; :class:`ModelLoadError` if it is not a complete model,
        :class:`UnsupportedModelError` if it is one this scorer cannot reproduce (or without the kernel:
        the file is checked first all the same, so fastText never loads a file the reader refuses)."""
        return cls(read_model_file(path))

    # ---- scoring -------------------------------------------------------------------------------------

    def logits(self, lines: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """fastText's float32 output scores before the sigmoid/softmax, ``(n, 3)`` in LABELS order, and
        whether each line read any row (fastText predicts nothing for a line without one)."""
        return self._logits_from_sums(*self.row_sums(lines))

    def row_sums(self, lines: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Each line's float32 sum of its input rows in fastText's order, ``(n, dim)``, and its number of
        rows ``(n,)``."""
        sums = np.zeros((len(lines), self.dim), dtype=np.float32)
        counts = np.empty(len(lines), dtype=np.int64)
        if not self._kernel.sum_rows(lines, sums, counts):
            self._kernel.sum_rows(_as_bytes(lines), sums, counts)
        return sums, counts

    def oov_counts(self, lines: Sequence[str]) -> tuple[int, int]:
        """(tokens outside the vocabulary, all tokens) of ``lines``, tokenised as the model reads them
        (labels and ``</s>`` not counted)."""
        n = len(lines)
        counts, words, tokens = (np.empty(n, dtype=np.int64) for _ in range(3))
        sums = np.empty((n, self.dim), dtype=np.float32)
        if isinstance(self._kernel.sum_rows(lines, sums, counts, words, tokens), bool):
            self._kernel.sum_rows(_as_bytes(lines), sums, counts, words, tokens)
        total = int(tokens.sum()) - n  # every line ends in </s>
        known = int(words.sum()) - (n if self._eos_known else 0)
        return total - known, total

    def _logits_from_sums(
        self, sums: npt.NDArray[np.float32], counts: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        n = counts.size
        has_rows = counts > 0
        scale = np.zeros(n, dtype=np.float32)
        scale[has_rows] = (1.0 / counts[has_rows]).astype(np.float32)  # Vector::mul(real(1.0 / n))
        hidden = sums * scale[:, None]
        logits = np.zeros((n, len(LABELS)), dtype=np.float32)
        for j in range(self.dim):  # DenseMatrix::dotRow: d += w[j] * h[j], in order, in float32
            logits += hidden[:, j : j + 1] * self._output[:, j]
        return logits, has_rows

    def scores_from_logits(
        self, logits: npt.NDArray[np.float32], has_rows: npt.NDArray[np.bool_] | None = None
    ) -> npt.NDArray[np.float64]:
        """fastText's returned probabilities for float32 ``logits``: the table sigmoid (ova) or softmax,
        then ``exp(log(p + 1e-5))`` as fastText reports them; rows without input are zeros."""
        logits = np.asarray(logits, dtype=np.float32)
        if self.loss == "ova":
            index = (logits + np.float32(_MAX_SIGMOID)) * np.float32(_SIGMOID_TABLE_SIZE)
            index = index / np.float32(_MAX_SIGMOID) / np.float32(2)
            inside = np.clip(index, 0, _SIGMOID_TABLE_SIZE).astype(np.int64)
            probs = self._sigmoid[inside]
            probs = np.where(logits < -_MAX_SIGMOID, np.float32(0), probs)
            probs = np.where(logits > _MAX_SIGMOID, np.float32(1), probs).astype(np.float32)
        else:
            peak = logits.max(axis=1, keepdims=True)
            exps = np.exp(logits - peak)
            total = np.zeros((logits.shape[0], 1), dtype=np.float32)
            for j in range(logits.shape[1]):  # z += output[i], in order
                total += exps[:, j : j + 1]
            probs = exps / total
        # predictLine: exp(std_log(p)) with std_log(p) = float32(log(p + 1e-5)).
        logged = np.log(probs.astype(np.float64) + 1e-5).astype(np.float32)
        reported: npt.NDArray[np.float64] = np.exp(logged).astype(np.float64)
        if has_rows is not None:
            reported[~has_rows] = 0.0
        return reported

    def fasttext_probabilities(self, lines: Sequence[str]) -> npt.NDArray[np.float64]:
        """What fastText's ``predict(lines, k=3)`` returns, as an ``(n, 3)`` array in LABELS order."""
        logits, has_rows = self.logits(lines)
        return self.scores_from_logits(logits, has_rows)

    # ---- explanations --------------------------------------------------------------------------------

    def word_pulls(self, lines: Sequence[str]) -> WordPulls:
        """Each line's words (the model's own, in token order; word n-grams and unknown words left out)
        and each word's pull: its contribution to the negative logit minus its contribution to the
        positive one (``> 0`` pulls negative), with the same contributions as :meth:`explain`."""
        n = len(lines)
        counts, per_line = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        sums = np.empty((n, self.dim), np.float32)
        found = self._kernel.sum_rows(lines, sums, counts, per_line)
        if isinstance(found, bool):
            found = self._kernel.sum_rows(_as_bytes(lines), sums, counts, per_line)
        assert isinstance(found, bytes)
        word_rows = np.frombuffer(found, dtype=np.int64)
        pull = self._row_pull()[word_rows] / np.repeat(counts, per_line)
        return WordPulls.from_rows(word_rows, pull, per_line.astype(np.intp), self._word_text)

    def _word_text(self, row: int) -> str:
        """Word ``row`` as text, decoded once (as met: the whole vocabulary as str is megabytes)."""
        text = self._texts.get(row)
        if text is None:
            text = self._texts[row] = self._words[row].decode("utf-8", "replace")
        return text

    def _row_pull(self) -> npt.NDArray[np.float64]:
        """``(output_negative - output_positive) . row`` of every word's input row, computed once."""
        if self._pull is None:
            negative, positive = LABELS.index("negative"), LABELS.index("positive")
            direction = self._output[negative].astype(np.float64) - self._output[positive]
            self._pull = self._table[: self._nwords].astype(np.float64) @ direction
        return self._pull

    def explain(self, line: str) -> Explanation:
        """Each token's contribution to each class logit for one normalised line (see
        :class:`Explanation` for the identity)."""
        try:
            rows, firsts, lengths, tokens = self._kernel.explain_rows(line)
        except UnicodeEncodeError:  # a lone surrogate
            rows, firsts, lengths, tokens = self._kernel.explain_rows(line.encode("utf-8", "surrogatepass"))
        logits, has_rows = self.logits([line])
        merged: dict[str, npt.NDArray[np.float64]] = {}
        if rows:
            parts = self._table[rows].astype(np.float64) @ self._output.astype(np.float64).T / len(rows)
            names = [token.decode("utf-8", "replace") for token in tokens]
            for first, length, part in zip(firsts, lengths, parts, strict=True):
                name = " ".join(names[first : first + length])
                merged[name] = merged[name] + part if name in merged else part
        listed = [(name, (float(v[0]), float(v[1]), float(v[2]))) for name, v in merged.items()]
        first_logits = logits[0].astype(np.float64) if bool(has_rows[0]) else np.zeros(3)
        return Explanation(
            tokens=listed, logits=(float(first_logits[0]), float(first_logits[1]), float(first_logits[2]))
        )
