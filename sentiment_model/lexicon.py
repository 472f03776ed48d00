"""Sentiment-lexicon tokens appended to the normalised text (part of :func:`sentiment_model.normalize`).

Uses VADER's lexicon and emoji descriptions, shipped inside the ``vaderSentiment`` package (nothing is
downloaded). For every word whose valence is at least 0.5 in magnitude a ``__lexpos__`` or ``__lexneg__``
token is appended, flipped for words up to three tokens after a negation, so fastText can learn from
polarity even for words it rarely saw in training; a sentence-level VADER score did no better and costs
far more (docs/results.md, "Model quality").
"""

from __future__ import annotations

from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

POSITIVE, NEGATIVE = "__lexpos__", "__lexneg__"
_MIN_VALENCE = 0.5
#: A negation flips the valence of the tokens up to this many after it.
NEGATION_REACH = 3
#: Class bits in token_codes(): valence sign (two bits, at most one set), negation, clause end.
POSITIVE_BIT, NEGATIVE_BIT, NEGATION_BIT, CLAUSE_BIT = 1, 2, 4, 8
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


@lru_cache(maxsize=1)
def token_codes() -> dict[str, int]:
    """Token -> class bits (valence sign, negation, clause end): one table, so a token costs one lookup.
    Tokens without an entry have code 0."""
    words, emojis = _lexicon()
    codes: dict[str, int] = {}
    single_emojis = (e for e in emojis if len(e) == 1 and e not in words)
    for token, score in [*words.items(), *((e, valence(e)) for e in single_emojis)]:
        if abs(score) >= _MIN_VALENCE:
            codes[token] = POSITIVE_BIT if score > 0 else NEGATIVE_BIT
    for token in _CLAUSE_END:
        codes[token] = codes.get(token, 0) | CLAUSE_BIT
    for token in _NEGATIONS:  # a negation only negates: its own valence and clause role do not count
        codes[token] = NEGATION_BIT
    return codes
