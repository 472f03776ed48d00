"""The same normalisation as :func:`sentiment_model.normalize.normalize_batch`, one text at a time.

Why a second path: the batch code costs about 100 array operations per call whatever its size, so a
call with one text took ~250 µs (load 1.5) where this per-text code takes ~25 µs; the API scores one
text per ``POST /predict``. :func:`~sentiment_model.normalize.normalize_batch` uses this below
``SMALL_BATCH`` texts, the batch code above. Both are held to the frozen per-text code the published
models were trained with (``tests/test_normalize.py``, all TweetEval texts and fuzzed ones), and to each
other.

Both :func:`normalize_text` and the batch call first hand the texts to a small C extension,
``sentiment_model/_fastnormalize.c`` (:func:`compiled_normalizer`), when it is built (the package build
compiles it; without it the Python code runs unchanged). It follows these rules in one pass per step for
pure-ASCII texts, every rule passed in from here, and leaves any other text (a non-ASCII character, an
escape it does not take) to the Python code by returning None for it: it takes all 57,298 ASCII texts of
TweetEval's 59,899 (95.7%), with the same output byte for byte (the same tests, run with it and without
it). Measured (``python -m bench.normalize_bench``, 2,000 TweetEval texts, 9 alternating runs in one
process, ``taskset -c 1`` on a 2-core box shared with a benchmark; median CPU µs per text): val (all
ASCII) 0.82 with it, 4.29 for the Python batch code, 20.7 for the frozen per-text code; test (79% ASCII)
2.15, 4.61, 20.1. One text (the API): :func:`normalize_text` 1.1 µs with it, 23 µs in Python.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache
from typing import Final

from sentiment_model.lexicon import NEGATIVE, POSITIVE, token_codes

try:  # optional: built from _fastnormalize.c by the package build; without it the Python code runs
    from sentiment_model import _fastnormalize
except ImportError:  # pragma: no cover - depends on the build
    _fastnormalize = None  # type: ignore[assignment]

#: Below this many texts a call takes the per-text path (break-even measured at 15-20 texts).
SMALL_BATCH: Final = 16

_POSITIVE, _NEGATIVE, _NEGATION, _CLAUSE = 1, 2, 4, 8  # the bits of lexicon.token_codes()
_NEGATION_REACH = 3
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


@lru_cache(maxsize=1)
def _spacing_table() -> dict[int, str]:
    """Every Unicode punctuation or symbol character (but ' _ @) -> itself padded with spaces."""
    return {cp: f" {chr(cp)} " for cp in range(sys.maxunicode + 1) if _padded(chr(cp))}


def clean_text(text: str) -> str:
    """:func:`sentiment_model.normalize.clean` of one text."""
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
    spaced = text.translate(_spacing_table())
    if "'" in spaced:
        spaced = _LONE_APOSTROPHE.sub(" ' ", spaced)
    return " ".join(spaced.split())


def normalize_text(text: str) -> str:
    """:func:`sentiment_model.normalize.normalize` of one text: the compiled normaliser's result when it
    handles the text (see :func:`compiled_normalizer`), else :func:`normalize_text_python`'s."""
    normalizer = compiled_normalizer()
    if normalizer is not None:
        normalized = normalizer.normalize((text,))[0]
        if normalized is not None:
            return normalized
    return normalize_text_python(text)


def normalize_text_python(text: str) -> str:
    """:func:`normalize_text` in Python: clean the text, then append its polarity tokens (one lookup per
    token in the same table the batch code uses)."""
    tokens = clean_text(text).split()
    codes = token_codes()
    marks: list[str] = []
    negated_until = -1
    for i, token in enumerate(tokens):
        code = codes.get(token, 0)
        if code & _NEGATION:
            negated_until = i + _NEGATION_REACH
            continue
        if code & _CLAUSE:
            negated_until = -1
        valence = code & (_POSITIVE | _NEGATIVE)
        if valence:
            marks.append(POSITIVE if (valence == _POSITIVE) != (i <= negated_until) else NEGATIVE)
    return " ".join(tokens + marks)


def compiled_normalizer() -> _fastnormalize.Normalizer | None:
    """The compiled normaliser (``_fastnormalize.c``), built on first use; None when it is not built.

    Its ``normalize(texts)`` gives :func:`normalize_text` of each pure-ASCII text (None for the texts it
    leaves to the Python code: any non-ASCII character, a "\\u" escape that does not spell a plain
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
        negation_reach=_NEGATION_REACH,
    )
