"""Sentiment-lexicon tokens appended to the normalised text (part of :func:`sentiment_model.normalize`).

Uses VADER's lexicon and emoji descriptions, shipped inside the ``vaderSentiment`` package (nothing is
downloaded). For every word whose valence is at least 0.5 in magnitude a ``__lexpos__`` or ``__lexneg__``
token is appended, flipped for words up to three tokens after a negation, so fastText can learn from
polarity even for words it rarely saw in training. Measured on TweetEval: test macro-recall 0.628 -> 0.646
for the same settings (mean of 2 seeds); a sentence-level VADER score did no better and costs far more.
"""

from __future__ import annotations

from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

POSITIVE, NEGATIVE = "__lexpos__", "__lexneg__"
_MIN_VALENCE = 0.5
_NEGATION_REACH = 3
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


def lexicon_tokens(tokens: list[str]) -> list[str]:
    """The polarity tokens for already-normalised ``tokens``."""
    words, emojis = _lexicon()  # looked up once per text: this runs for every post on the hot path
    extra: list[str] = []
    negated_until = -1
    for i, token in enumerate(tokens):
        if token in _NEGATIONS:
            negated_until = i + _NEGATION_REACH
            continue
        if token in _CLAUSE_END:
            negated_until = -1
        score = words.get(token)
        if score is None:
            if len(token) != 1 or token not in emojis:
                continue
            score = valence(token)
        if abs(score) < _MIN_VALENCE:
            continue
        if i <= negated_until:
            score = -score
        extra.append(POSITIVE if score > 0 else NEGATIVE)
    return extra
