"""The same normalisation as :func:`sentiment_model.normalize.normalize_batch`, one text at a time.

Why a second path: the batch code costs about 100 array operations per call whatever its size, so a
call with one text took ~250 µs (load 1.5) where this per-text code takes ~25 µs; the API scores one
text per ``POST /predict``. :func:`~sentiment_model.normalize.normalize_batch` uses this below
``SMALL_BATCH`` texts, the batch code above. Both are held to the frozen per-text code the published
models were trained with (``tests/test_normalize.py``, all TweetEval texts and fuzzed ones), and to each
other.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache
from typing import Final

from sentiment_model.lexicon import NEGATIVE, POSITIVE, token_codes

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


@lru_cache(maxsize=1)
def _spacing_table() -> dict[int, str]:
    """Every Unicode punctuation or symbol character (but ' _ @) -> itself padded with spaces."""
    return {
        cp: f" {chr(cp)} "
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp))[0] in "PS" and chr(cp) not in _KEEP_ATTACHED
    }


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
    """:func:`sentiment_model.normalize.normalize` of one text: clean it, then append its polarity
    tokens (one lookup per token in the same table the batch code uses)."""
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
