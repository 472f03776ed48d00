"""The single text preprocessing used at training and at serving time."""

import re

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_USER = re.compile(r"@\w+")
_ELONGATED = re.compile(r"(\w)\1{2,}")
_PUNCT = re.compile(r"([!?.,;:\"()\[\]{}…])")
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case, mask URLs and user handles, squash elongations, split punctuation, one line.

    fastText reads one example per line, so every kind of whitespace (including line separators) becomes
    a single space; the result never contains a newline.
    """
    text = _URL.sub(" URL ", text)
    text = _USER.sub(" @user ", text)
    text = text.lower()
    text = _ELONGATED.sub(r"\1\1", text)
    text = _PUNCT.sub(r" \1 ", text)
    return _SPACE.sub(" ", text).strip()
