"""A batch's words and their pulls towards negative, as columns (what the worker's term tallies read)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class WordPulls:
    """Each word of a batch of normalised lines, in token order, and its pull: its contribution to the
    negative logit minus its contribution to the positive one (``> 0`` pulls negative).

    Token ``t`` of the batch is ``words[word_index[t]]`` with pull ``pulls[t]``; line ``i`` owns the next
    ``per_line[i]`` tokens. ``words`` holds each distinct word of the batch once, so a caller tests a word
    once per batch, not once per occurrence.
    """

    words: list[str]
    word_index: npt.NDArray[np.intp]
    pulls: npt.NDArray[np.float64]
    per_line: npt.NDArray[np.intp]

    @classmethod
    def from_rows(
        cls,
        rows: npt.NDArray[np.int64],
        pulls: npt.NDArray[np.float64],
        per_line: npt.NDArray[np.intp],
        word: Callable[[int], str],
    ) -> WordPulls:
        """From any per-token word key (vocabulary row, or a string's place in a list); ``word(key)`` is
        the key's text, asked once per distinct key."""
        keys, index = np.unique(rows, return_inverse=True)
        return cls([word(k) for k in keys.tolist()], index.reshape(-1).astype(np.intp), pulls, per_line)

    @classmethod
    def from_tokens(cls, tokens: Sequence[Sequence[str]], pulls: npt.NDArray[np.float64]) -> WordPulls:
        """From each line's tokens as strings and the batch's pulls in token order."""
        places: dict[str, int] = {}
        per_line = np.fromiter((len(line) for line in tokens), np.intp, len(tokens))
        index = np.fromiter(
            (places.setdefault(w, len(places)) for line in tokens for w in line), np.intp, int(per_line.sum())
        )
        return cls(list(places), index, np.asarray(pulls, np.float64), per_line)

    def lines(self) -> list[tuple[list[str], npt.NDArray[np.float64]]]:
        """Per line: its words and their pulls (for tests and one-off explanations)."""
        out = []
        start = 0
        for n in self.per_line.tolist():
            words = [self.words[i] for i in self.word_index[start : start + n].tolist()]
            out.append((words, self.pulls[start : start + n]))
            start += n
        return out
