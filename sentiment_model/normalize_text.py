"""The normalisation rules in Python, one text at a time: the reference the compiled normaliser
(``sentiment_model/_fastnormalize.c``) is held to, and the path for the texts it leaves (any non-ASCII
character, an escape it does not take; about 4% of TweetEval) or for a build without it.

:func:`sentiment_model.normalize.normalize_batch` is the entry point; every rule the compiled code follows
is passed in from here (:func:`compiled_normalizer`), so each table exists once. Both are held to the
frozen per-text code the published models were trained with (``tests/test_normalize.py``, all TweetEval
texts and fuzzed ones).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from sentiment_model.lexicon import (
    CLAUSE_BIT,
    NEGATION_BIT,
    NEGATION_REACH,
    NEGATIVE,
    NEGATIVE_BIT,
    POSITIVE,
    POSITIVE_BIT,
    token_codes,
)

try:  # optional: built from _fastnormalize.c by the package build; without it the Python code runs
    from sentiment_model import _fastnormalize
except ImportError:  # pragma: no cover - depends on the build
    _fastnormalize = None  # type: ignore[assignment]

_ENTITIES = {
    "&amp;": "&",
    "&gt;": ">",
    "&lt;": "<",
    "&quot;": '"',
    "&#039;": "'",
    "&#39;": "'",
    "&nbsp;": " ",
    "&apos;": "'",
}
_ENTITY = re.compile(r"&(?:amp|gt|lt|quot|#0?39|nbsp|apos);")
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_USER = re.compile(r"@\w+")
_ELONGATED = re.compile(r"(\w)\1\1+")
_REPEATED_PUNCT = re.compile(r"([!?.])\1+")
_HASHTAG = re.compile(r"#(\w+)")
_LONE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_TYPOGRAPHY = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2026": "...",
        "\u00a0": " ",
        "\u2013": "-",
        "\u2014": "-",
    }
)
_KEEP_ATTACHED = frozenset("'_@")


def _unescape(text: str) -> str:
    if "\\u" not in text and "&" not in text:  # the common case: nothing to unescape
        return text
    for _ in range(3):  # an escape can spell another escape; a few rounds settle any real text
        unescaped = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
        unescaped = _ENTITY.sub(lambda m: _ENTITIES.get(m.group(0), "'"), unescaped)
        if unescaped == text:
            break
        text = unescaped
    return text


def _padded(char: str) -> bool:
    """Whether the spacing table pads the character: Unicode punctuation or symbol, but ' _ @."""
    return unicodedata.category(char)[0] in "PS" and char not in _KEEP_ATTACHED


class _SpacingTable(dict[int, str]):
    """Code point -> the character, padded with spaces when :func:`_padded`: filled as characters are
    met (built whole over all 1.1M code points it took about 0.3 s, paid at every start)."""

    def __missing__(self, code_point: int) -> str:
        char = chr(code_point)
        spaced = self[code_point] = f" {char} " if _padded(char) else char
        return spaced


_SPACING = _SpacingTable()


def clean_text(text: str) -> str:
    """Lower-case, fold escapes and typography, mask URLs and handles, split punctuation, one line.

    fastText reads one example per line, so every kind of whitespace (including line separators) becomes
    a single space; the result never contains a newline. ``clean_text(clean_text(t)) == clean_text(t)``.
    """
    text = _unescape(text.strip())
    if not text.isascii():  # NFKC and the typography table leave ASCII unchanged
        text = unicodedata.normalize("NFKC", text).translate(_TYPOGRAPHY).strip()
    while len(text) > 1 and text[0] == '"' and text[-1] == '"':  # a quoted tweet: the quotes say nothing
        text = text[1:-1].strip()
    if "://" in text or "www." in text.lower():  # each substitution only when its trigger is there
        text = _URL.sub(" URL ", text)
    if "@" in text:
        text = _USER.sub(" @user ", text)
    text = text.lower()
    if _ELONGATED.search(text):
        text = _ELONGATED.sub(r"\1\1", text)
    if "!!" in text or "??" in text or ".." in text:
        text = _REPEATED_PUNCT.sub(r"\1\1", text)
    if "#" in text:
        text = _HASHTAG.sub(r"# \1", text)
    spaced = text.translate(_SPACING)
    if "'" in spaced:
        spaced = _LONE_APOSTROPHE.sub(" ' ", spaced)
    return " ".join(spaced.split())


def normalize_text(text: str) -> str:
    """:func:`sentiment_model.normalize.normalize` in Python: clean the text, then append its polarity
    tokens (one lookup per token in :func:`~sentiment_model.lexicon.token_codes`)."""
    tokens = clean_text(text).split()
    codes = token_codes()
    marks: list[str] = []
    negated_until = -1
    for i, token in enumerate(tokens):
        code = codes.get(token, 0)
        if code & NEGATION_BIT:
            negated_until = i + NEGATION_REACH
            continue
        if code & CLAUSE_BIT:
            negated_until = -1
        valence = code & (POSITIVE_BIT | NEGATIVE_BIT)
        if valence:
            marks.append(POSITIVE if (valence == POSITIVE_BIT) != (i <= negated_until) else NEGATIVE)
    return " ".join(tokens + marks)


def compiled_normalizer() -> _fastnormalize.Normalizer | None:
    """The compiled normaliser (``_fastnormalize.c``), built on first use; None when it is not built.

    Its ``normalize(texts)`` gives :func:`normalize_text` of each pure-ASCII text (None for the texts it
    leaves to :func:`normalize_text`: any non-ASCII character, a "\\u" escape that does not spell a plain
    punctuation character or one of the typography folds). Every rule it follows is passed in from here.
    """
    if _fastnormalize is None:
        return None
    return _build_compiled_normalizer()


@lru_cache(maxsize=1)
def _build_compiled_normalizer() -> _fastnormalize.Normalizer:
    # What NFKC and the typography table make of each typographic character, where that is ASCII.
    folds = {cp: unicodedata.normalize("NFKC", chr(cp)).translate(_TYPOGRAPHY) for cp in _TYPOGRAPHY}
    return _fastnormalize.Normalizer(
        token_codes(),
        padded="".join(char for char in map(chr, range(128)) if _padded(char)),
        entities=_ENTITIES,
        folds={cp: fold for cp, fold in folds.items() if fold.isascii()},
        positive=POSITIVE,
        negative=NEGATIVE,
        negation_reach=NEGATION_REACH,
        positive_bit=POSITIVE_BIT,
        negative_bit=NEGATIVE_BIT,
        negation_bit=NEGATION_BIT,
        clause_bit=CLAUSE_BIT,
    )
