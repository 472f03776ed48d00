"""Sentiment-lexicon tokens appended to the normalised text (part of :func:`sentiment_model.normalize`).

Uses VADER's lexicon and emoji descriptions, shipped inside the ``vaderSentiment`` package (nothing is
downloaded). For every word whose valence is at least 0.5 in magnitude a ``__lexpos__`` or ``__lexneg__``
token is appended, flipped for words up to three tokens after a negation, so fastText can learn from
polarity even for words it rarely saw in training; a sentence-level VADER score did no better and costs
far more (docs/results.md, "Model quality").
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

POSITIVE, NEGATIVE = "__lexpos__", "__lexneg__"
_MIN_VALENCE = 0.5
_NEGATION_REACH = 3
# Class bits in token_codes(): valence sign (two bits, at most one set), negation, clause end.
_POSITIVE, _NEGATIVE, _NEGATION, _CLAUSE = 1, 2, 4, 8
_VALENCE = _POSITIVE | _NEGATIVE
_CLAUSE_END = frozenset(".!?,;:")
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "nowhere",
        "cannot",
        "can't",
        "cant",
        "don't",
        "dont",
        "doesn't",
        "doesnt",
        "didn't",
        "didnt",
        "isn't",
        "isnt",
        "wasn't",
        "wasnt",
        "aren't",
        "arent",
        "weren't",
        "werent",
        "won't",
        "wont",
        "wouldn't",
        "wouldnt",
        "shouldn't",
        "shouldnt",
        "couldn't",
        "couldnt",
        "ain't",
        "aint",
        "haven't",
        "havent",
        "hasn't",
        "hasnt",
        "hadn't",
        "hadnt",
        "without",
    ]
)


@lru_cache(maxsize=1)
def _lexicon() -> tuple[dict[str, float], dict[str, str]]:
    analyzer = SentimentIntensityAnalyzer()  # reads the two lexicon files shipped with the package
    return dict(analyzer.lexicon), dict(analyzer.emojis)


def valence(token: str) -> float:
    """VADER valence of a normalised token (-4..4; emoji scored from their description words)."""
    words, emojis = _lexicon()
    if token in words:
        return words[token]
    if len(token) == 1 and token in emojis:
        return sum(words.get(w, 0.0) for w in emojis[token].lower().split())
    return 0.0


def polarity_marks(
    codes: npt.NDArray[np.uint8], first_in_text: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """The polarity tokens of a batch of already-normalised texts, all at once.

    ``codes[i]`` is the :func:`token_codes` entry of token ``i`` of the batch (0 if it has none) and
    ``first_in_text[i]`` whether it starts a text (``[0]`` is not read). Returns, in order, the index
    of every token that earns a polarity token and whether that one is positive. Array operations
    replace the per-token Python loop, which was the largest cost of normalising a post.
    """
    marked = (codes & _VALENCE).nonzero()[0]
    positive = (codes[marked] & _VALENCE) == _POSITIVE
    negation = (codes & _NEGATION) != 0
    if marked.size and negation.any():
        # A token is negated when a negation is at most _NEGATION_REACH tokens before it with no clause
        # end or text start in between, the token itself included. Counting these barriers up to each
        # token tells whether one lies between two tokens.
        barrier = (codes & _CLAUSE) != 0
        barrier[1:] |= first_in_text[1:]
        level = np.cumsum(barrier, dtype=np.int32)
        negated = np.zeros(codes.size, dtype=bool)
        for reach in range(1, _NEGATION_REACH + 1):
            negated[reach:] |= negation[:-reach] & (level[reach:] == level[:-reach])
        positive ^= negated[marked]
    return marked, positive


@lru_cache(maxsize=1)
def token_codes() -> dict[str, int]:
    """Token -> class bits (valence sign, negation, clause end) for :func:`polarity_marks`: one table, so
    a token costs one lookup. Tokens without an entry have code 0."""
    words, emojis = _lexicon()
    codes: dict[str, int] = {}
    single_emojis = (e for e in emojis if len(e) == 1 and e not in words)
    for token, score in [*words.items(), *((e, valence(e)) for e in single_emojis)]:
        if abs(score) >= _MIN_VALENCE:
            codes[token] = _POSITIVE if score > 0 else _NEGATIVE
    for token in _CLAUSE_END:
        codes[token] = codes.get(token, 0) | _CLAUSE
    for token in _NEGATIONS:  # a negation only negates: its own valence and clause role do not count
        codes[token] = _NEGATION
    return codes
