"""The single text preprocessing used at training and at serving time: clean-up, then lexicon tokens.

Measured on TweetEval val (mean of 3 runs, simple config): raw text 0.618 macro-recall, normalised 0.646.
Nearly all of the gain comes from splitting punctuation off words (+0.026) and lower-casing (+0.009);
URL/user masking, elongation squashing and quote handling are neutral on val but make serving robust
(unseen URLs and handles map to one known token). Negation marking hurt (0.641) and is not used.

There is one implementation, and it works on a batch: :func:`normalize` and :func:`clean` are batches of
one, so training and serving cannot disagree. The batch runs each step once over all texts joined by
``"\\n"`` (see :func:`_clean_chars` for why that is exact), with the character-level rules and the
lexicon lookup as NumPy array operations; only texts holding escapes, non-ASCII characters, outer quotes
or URLs get per-text work (see :func:`_prepare`). It equals the previous per-text code byte for byte on all
59,899 TweetEval texts and on fuzzed Unicode (``tests/test_normalize.py`` keeps that code as the oracle).
Before any of that, the pure-ASCII texts go through the compiled normaliser when it is built (see
:mod:`sentiment_model.normalize_text`): the Python code only sees the texts it leaves.
Speed: see :func:`normalize_batch`.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt

from sentiment_model.lexicon import NEGATIVE, POSITIVE, polarity_marks, token_codes
from sentiment_model.normalize_text import (
    _URL,
    _USER,
    SMALL_BATCH,
    clean_text,
    compiled_normalizer,
    normalize_text_python,
)
from sentiment_model.normalize_text import (
    _unescape as unescape_text,
)

# The escape, entity, URL and handle patterns are the per-text path's: one definition of each rule.
# TweetEval's train/val texts hold literal "\u2019"-style escapes (about 5,000); live posts have the
# characters themselves, so both are folded to the character.
_TYPOGRAPHY = (
    ("\u2019", "'"),
    ("\u2018", "'"),
    ("\u201c", '"'),
    ("\u201d", '"'),
    ("\u2026", "..."),
    ("\u00a0", " "),
    ("\u2013", "-"),
    ("\u2014", "-"),
)
_SEPARATOR = "\n"
_INT32_CHARS = 1 << 29  # positions are int32 up to this many characters (spacing at most triples them)
_SIGNATURE_BITS = 18  # 2**18 signatures for about 6,800 longer entries: few tokens meet a wrong one
_BUCKET_BITS = 4
_BUCKET_SIZE = (1 << _BUCKET_BITS) - 1  # at most 5 entries share a signature (length and 5 characters)
_ESCAPE_SEPARATOR = "\U0010ffff"
_NEWLINE, _SPACE, _APOSTROPHE = 10, 32, 39
# Character classes, one bit each, in the table from _char_classes().
_WORD = 1  # the regex engine's \w
_WHITESPACE = 2  # str.split()'s whitespace, except "\n" (the separator between texts)
_PADDED = 4  # Unicode punctuation or symbol (but ' _ @): split off as a token of its own
_SQUASHED = 8  # \w or one of "!?.": a run of three or more is cut to two


def normalize(text: str) -> str:
    """:func:`clean` the text, then append its sentiment-lexicon tokens (:mod:`sentiment_model.lexicon`)."""
    return normalize_batch([text])[0]


def clean(text: str) -> str:
    """Lower-case, fold escapes and typography, mask URLs and handles, split punctuation, one line.

    fastText reads one example per line, so every kind of whitespace (including line separators) becomes
    a single space; the result never contains a newline. ``clean(clean(t)) == clean(t)``.
    """
    return clean_batch([text])[0]


def clean_batch(texts: Sequence[str]) -> list[str]:
    """:func:`clean` of every text, in order."""
    if not texts:
        return []
    if len(texts) < SMALL_BATCH:  # the batch code's fixed cost outweighs a few texts: see normalize_text
        return [clean_text(text) for text in texts]
    return _decode(_clean_chars(texts).chars).split(_SEPARATOR)


def normalize_batch(texts: Sequence[str]) -> list[str]:
    """:func:`normalize` of every text, in order: ``[normalize(t) for t in texts]``, computed for all at once.

    Measured with ``python -m bench.normalize_bench`` (2,000 TweetEval texts, 9 alternating runs, median
    CPU time per text, a 2-core box shared with other jobs): val 49.5 us with the previous per-text code,
    11.2 us here (4.4x); test 48.6 -> 12.4 us (3.9x). A call costs about 100 array operations whatever
    its size, so small calls pay for them: one text took ~400 us on that box (the per-text code 50 us),
    ten texts ~70 us each, a hundred ~18 us each. Below ``SMALL_BATCH`` texts it therefore takes the
    per-text path of :mod:`sentiment_model.normalize_text` (same output, tested).

    With the compiled normaliser built, it takes the pure-ASCII texts first (same output, tested) and
    only the texts it leaves run the code above, as a batch of their own (``SMALL_BATCH`` applies to
    that batch): 2,000 val texts (all ASCII) 0.82 us per text against 4.29 for the code above in the same
    run, test (79% ASCII) 2.15 against 4.61 (``bench.normalize_bench``, load ~1.5-2).
    """
    if not texts:
        return []
    normalizer = compiled_normalizer()
    if normalizer is None:
        return _normalize_batch_python(texts)
    normalized = normalizer.normalize(texts)
    rest = [i for i, text in enumerate(normalized) if text is None]
    if rest:
        for i, text in zip(rest, _normalize_batch_python([texts[i] for i in rest]), strict=True):
            normalized[i] = text
    return cast("list[str]", normalized)


#: Texts that take every path of :func:`normalize_batch` once (the second is not ASCII, so it reaches
#: the Python code where the compiled normaliser is built).
_WARM_UP_TEXTS = ("what a lovely day, thank you all", "what a lovely day, thank you all \u2014 café 😀")


def warm_up() -> None:
    """Build the tables normalisation builds lazily, so that no post pays for their first use.

    Measured: the first call took 0.2 s and the first batch of ``SMALL_BATCH`` texts 0.4 s more; in
    ``bench.worker_bench`` every result of the worker's first second at 10,000 posts/s came 200-500 ms
    late (the whole p99). :meth:`sentiment_model.Predictor.load` calls it.
    """
    for text in _WARM_UP_TEXTS:
        normalize_batch([text])
        normalize_batch([text] * SMALL_BATCH)


def _normalize_batch_python(texts: Sequence[str]) -> list[str]:
    """:func:`normalize_batch` without the compiled normaliser: the per-text Python code below
    ``SMALL_BATCH`` texts, the array code from there."""
    if len(texts) < SMALL_BATCH:
        return [normalize_text_python(text) for text in texts]
    cleaned = _clean_chars(texts)
    text = _decode(cleaned.chars)
    starts = cleaned.token_starts
    first_in_text = cleaned.chars.take(starts - 1) == _NEWLINE  # [-1] for the first token: any value
    marked, positive = polarity_marks(_lexicon_codes(cleaned), first_in_text)
    text_of_mark = np.searchsorted(cleaned.text_ends, starts.take(marked))
    normalized = text.split(_SEPARATOR)
    if text_of_mark.size:
        marks = [POSITIVE if p else NEGATIVE for p in positive.tolist()]
        first = (np.diff(text_of_mark, prepend=-1)).nonzero()[0]  # each text's marks are consecutive
        bounds = np.append(first, text_of_mark.size).tolist()
        for i, start, end in zip(text_of_mark[first].tolist(), bounds, bounds[1:], strict=False):
            normalized[i] = " ".join([normalized[i], *marks[start:end]])
    return normalized


class _Cleaned(NamedTuple):
    """Cleaned texts as code points joined by "\\n" (tokens separated by one space), where each token
    starts and ends (exclusive), and where each separator is."""

    chars: npt.NDArray[np.uint32]
    token_starts: npt.NDArray[np.int32 | np.int64]
    token_ends: npt.NDArray[np.int32 | np.int64]
    text_ends: npt.NDArray[np.int32 | np.int64]


def _lexicon_codes(cleaned: _Cleaned) -> npt.NDArray[np.uint8]:
    """The :func:`token_codes` entry of every token of the cleaned batch (0 where it has none).

    Without making a str of each token: a one-character token's code comes from a table by code point;
    a longer token's signature (length and five of its characters) names the few entries it can be
    (mostly none, else one), which are compared with it character by character. Splitting every token
    into a str and looking each up in the dict cost three times as much.
    """
    lexicon = _lexicon_arrays()
    starts, ends, chars = cleaned.token_starts, cleaned.token_ends, cleaned.chars
    lengths = ends - starts
    codes = np.zeros(starts.size, dtype=np.uint8)
    single = lengths == 1
    one = single.nonzero()[0]  # index arrays, not boolean masks: those are 3x slower here
    codes[one] = lexicon.by_char.take(chars.take(starts.take(one)))
    tokens = (~single).nonzero()[0]
    bucket = lexicon.buckets.take(_signature(lengths.take(tokens), starts.take(tokens), chars))
    # Pair every token with each entry of its signature, then compare all pairs at once.
    maybe = bucket.nonzero()[0]
    bucket = bucket.take(maybe)
    entries = bucket & _BUCKET_SIZE
    token = np.repeat(tokens.take(maybe), entries)
    # Pair p of a token is entry first + (p - the token's first pair): repeat first - that pair, add p.
    before = np.cumsum(entries, dtype=np.int32) - entries
    entry = np.repeat((bucket >> _BUCKET_BITS) - before, entries) + np.arange(token.size, dtype=np.int32)
    same_length = (lengths.take(token) == lexicon.entry_lengths.take(entry)).nonzero()[0]
    token, entry = token.take(same_length), entry.take(same_length)
    if token.size:
        size = lengths.take(token)
        begins = np.cumsum(size, dtype=size.dtype) - size  # where each pair's characters begin, flattened
        within = np.arange(int(size.sum()), dtype=size.dtype) - np.repeat(begins, size)
        token_chars = chars.take(np.repeat(starts.take(token), size) + within)
        entry_chars = lexicon.entry_chars.take(np.repeat(lexicon.entry_starts.take(entry), size) + within)
        equal = (np.logical_and.reduceat(token_chars == entry_chars, begins)).nonzero()[0]
        codes[token.take(equal)] = lexicon.entry_codes.take(entry.take(equal))
    return codes


def _signature(
    lengths: npt.NDArray[np.int32 | np.int64],
    starts: npt.NDArray[np.int32 | np.int64],
    chars: npt.NDArray[np.uint32],
) -> npt.NDArray[np.uint32]:
    """A hash of the length and the first two, middle and last two characters of tokens of two or more
    characters (``chars[starts[i] : starts[i] + lengths[i]]``), in 0 .. 2**_SIGNATURE_BITS - 1."""
    mixed = lengths.astype(np.uint32)
    ends = starts + lengths
    for at in (starts, starts + 1, starts + lengths // 2, ends - 2, ends - 1):
        mixed *= np.uint32(0x01000193)  # a polynomial in uint32 (wrapping), then MurmurHash3's finaliser
        mixed += chars.take(at)
    mixed ^= mixed >> np.uint32(16)
    mixed *= np.uint32(0x85EBCA6B)
    mixed ^= mixed >> np.uint32(13)
    mixed *= np.uint32(0xC2B2AE35)
    mixed ^= mixed >> np.uint32(16)
    return mixed >> np.uint32(32 - _SIGNATURE_BITS)


class _LexiconArrays(NamedTuple):
    """:func:`token_codes` as arrays for :func:`_lexicon_codes`; the longer entries sorted by signature."""

    by_char: npt.NDArray[np.uint8]  # the code of every one-character token, by code point
    buckets: npt.NDArray[np.int32]  # by signature: first entry << _BUCKET_BITS | how many have it
    entry_codes: npt.NDArray[np.uint8]
    entry_lengths: npt.NDArray[np.int32]
    entry_starts: npt.NDArray[np.int32]  # where each entry's characters begin in entry_chars
    entry_chars: npt.NDArray[np.uint32]


@lru_cache(maxsize=1)
def _lexicon_arrays() -> _LexiconArrays:
    table = token_codes()
    by_char = np.zeros(sys.maxunicode + 1, dtype=np.uint8)
    for token, code in table.items():
        if len(token) == 1:
            by_char[ord(token)] = code
    longer = [token for token in table if len(token) > 1]
    lengths = np.array([len(entry) for entry in longer], dtype=np.int32)
    starts = (np.cumsum(lengths, dtype=np.int32) - lengths).astype(np.int32)
    chars = np.array([ord(c) for entry in longer for c in entry], dtype=np.uint32)
    signatures = _signature(lengths, starts, chars)
    order = np.argsort(signatures, kind="stable")
    entries = [longer[i] for i in order]
    lengths = lengths[order]
    values, first, counts = np.unique(signatures[order], return_index=True, return_counts=True)
    if counts.max(initial=0) > _BUCKET_SIZE or len(entries) >= 1 << (31 - _BUCKET_BITS):
        raise RuntimeError("lexicon: too many entries share a signature")  # cannot happen for VADER
    buckets = np.zeros(1 << _SIGNATURE_BITS, dtype=np.int32)
    buckets[values] = (first << _BUCKET_BITS) | counts
    return _LexiconArrays(
        by_char=by_char,
        buckets=buckets,
        entry_codes=np.array([table[entry] for entry in entries], dtype=np.uint8),
        entry_lengths=lengths,
        entry_starts=(np.cumsum(lengths, dtype=np.int32) - lengths).astype(np.int32),
        entry_chars=np.array([ord(c) for entry in entries for c in entry], dtype=np.uint32),
    )


def _clean_chars(texts: Sequence[str]) -> _Cleaned:
    """The cleaned texts as code points, joined by "\\n"; tokens are separated by one space.

    Per text (only the texts whose trigger is present): strip, unescape, NFKC, typography, quote removal
    and URL masking, whose effect depends on the whole text (an escape can spell a quote or a newline).
    Then once over the texts joined by "\\n": handle masking, lower-casing, squashing elongations and
    repeated "!?.", padding punctuation and lone apostrophes, collapsing whitespace. This is exact because
    no step after the join reads across a "\\n": the handle regex stops at it, the character rules look at
    neighbours only through \\w (which "\\n" is not, like the end of a text), and ``str.lower`` treats
    "\\n" like the end of a string for the final sigma (it is neither cased nor case-ignorable). Inside a
    text every whitespace character acts the same in every step, so a newline of the text's own is made a
    space. The hashtag rule ("#tag" -> "# tag") only adds a space next to "#", which is padded anyway, so
    it needs no step. The tests compare against the previous per-text code on all TweetEval texts and on
    fuzzed Unicode.
    """
    prepared = _prepare(list(map(str.strip, texts)))
    joined = _SEPARATOR.join(prepared)
    if joined.count(_SEPARATOR) != len(prepared) - 1:
        joined = _SEPARATOR.join(text.replace(_SEPARATOR, " ") for text in prepared)
    if "@" in joined:
        joined = _USER.sub(" @user ", joined)
    points = np.frombuffer(joined.lower().encode("utf-32-le", "surrogatepass"), dtype="<u4")
    classes = _char_classes().take(points)
    # A run of three or more of the same \w or "!?." character keeps its first two ("(\w)\1\1+" -> "\1\1").
    kept = np.ones(points.size, dtype=bool)
    kept[2:] = ~(
        ((classes[2:] & _SQUASHED) != 0) & (points[2:] == points[1:-1]) & (points[1:-1] == points[:-2])
    )
    padded = (classes & _PADDED) != 0
    apostrophes = (points == _APOSTROPHE).nonzero()[0]
    if apostrophes.size:  # an apostrophe stays attached only between two \w characters ("don't")
        word = np.append((classes & _WORD) != 0, False)  # [-1] is False: nothing before the first char
        padded[apostrophes] = ~(word[apostrophes - 1] & word[apostrophes + 1])
    # The characters that stay: neither deleted nor whitespace. Whitespace lay between two of them when
    # the character just before the second is not one deleted from the first one's run.
    solid = (kept & ((classes & _WHITESPACE) == 0)).nonzero()[0]
    points, padded = points.take(solid), padded.take(solid)
    newline = points == _NEWLINE
    space_before = np.zeros(points.size, dtype=bool)
    space_before[1:] = ((solid[1:] - solid[:-1] > 1) & kept.take(solid[1:] - 1)) | padded[1:] | padded[:-1]
    space_before[1:] &= ~(newline[1:] | newline[:-1])
    # np.insert would do, but it sorts its indices: placing the characters after their spaces is 4x faster
    # (and an int32 cumsum 3x faster than the default).
    spaced = np.full(points.size + np.count_nonzero(space_before), _SPACE, dtype="<u4")
    position = np.int32 if points.size <= _INT32_CHARS else np.int64
    at: npt.NDArray[np.int32 | np.int64] = np.arange(points.size, dtype=position)
    at += np.cumsum(space_before, dtype=position)
    spaced[at] = points
    after_break = np.ones(points.size, dtype=bool)  # a token starts after a space, a separator or at 0
    after_break[1:] = space_before[1:] | newline[:-1]
    before_break = np.ones(points.size, dtype=bool)
    before_break[:-1] = space_before[1:] | newline[1:]
    in_token = ~newline
    starts = at.take((in_token & after_break).nonzero()[0])
    ends = at.take((in_token & before_break).nonzero()[0]) + 1
    return _Cleaned(spaced, starts, ends, at.take(newline.nonzero()[0]))


def _prepare(texts: list[str]) -> list[str]:
    """The per-text part of :func:`clean` for stripped texts: escapes, NFKC, typography, quotes, URLs.

    Each step runs only when its trigger is in the joined texts, and then only on the texts that hold
    it: most tweets hold none. A step can make another's trigger (an escape can spell a quote, a "://"
    or a non-ASCII character), so each one looks at the texts as the last one left them.
    """
    joined = _SEPARATOR.join(texts)
    if "\\u" in joined or "&" in joined:
        escaped = [i for i, text in enumerate(texts) if "\\u" in text or "&" in text]
        for i, text in zip(escaped, _unescape([texts[i] for i in escaped]), strict=True):
            texts[i] = text
        joined = _SEPARATOR.join(texts)
    if not joined.isascii():  # NFKC and the typography table leave ASCII unchanged: skip them for speed
        for i in [i for i, text in enumerate(texts) if not text.isascii()]:
            text = unicodedata.normalize("NFKC", texts[i])
            # What str.translate(_TYPOGRAPHY) did, 50x faster: a dict-table translate looks up every
            # character in Python, and the replacements make none of the other characters.
            for typographic, plain in _TYPOGRAPHY:
                if typographic in text:
                    text = text.replace(typographic, plain)
            texts[i] = text.strip()
        joined = _SEPARATOR.join(texts)
    if '"' in joined:
        for i in [i for i, text in enumerate(texts) if text[:1] == '"']:
            text = texts[i]
            while len(text) > 1 and text[0] == '"' and text[-1] == '"':  # a quoted tweet: quotes say nothing
                text = texts[i] = text[1:-1].strip()
        joined = _SEPARATOR.join(texts)
    if "://" in joined or "w." in joined or "W." in joined:
        # A text's lower case holds "www." exactly where the text holds [wW][wW][wW]".": only "W" and "w"
        # lower-case to "w", only "." to ".", and the one character with a longer lower case (U+0130)
        # gives neither. URLs are rare: str.find over the joined texts finds them 1.6x faster than a
        # text-by-text check, and the texts' ends say whose each find is.
        found = _finds(joined, "://")
        for last_w in (*_finds(joined, "w."), *_finds(joined, "W.")):
            if last_w >= 2 and joined[last_w - 2] in "wW" and joined[last_w - 1] in "wW":
                found.append(last_w)
        if found:
            ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.intp, count=len(texts)) + 1)
            for i in sorted(set(np.searchsorted(ends, found, side="right").tolist())):
                texts[i] = _URL.sub(" URL ", texts[i])
    return texts


def _finds(text: str, needle: str) -> list[int]:
    """Every position of ``needle`` in ``text`` (``str.find``: far faster than the regex engine's search)."""
    found = []
    at = text.find(needle)
    while at >= 0:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


def _unescape(texts: list[str]) -> list[str]:
    """Fold "\\uXXXX" escapes and HTML entities, all texts at once.

    The texts are joined by a character outside the BMP: no escape can spell it, none reads across it.
    """
    joined = _ESCAPE_SEPARATOR.join(texts)
    if len(texts) > 1 and joined.count(_ESCAPE_SEPARATOR) != len(texts) - 1:  # a text holds it: one by one
        return [_unescape([text])[0] for text in texts]
    joined = unescape_text(joined)  # the per-text rounds, once over the joined texts
    return joined.split(_ESCAPE_SEPARATOR) if len(texts) > 1 else [joined]


def _decode(points: npt.NDArray[np.uint32]) -> str:
    return points.astype("<u4", copy=False).tobytes().decode("utf-32-le", "surrogatepass")


_CATEGORY_CHUNK = 1 << 16


@lru_cache(maxsize=1)
def _char_classes() -> npt.NDArray[np.uint8]:
    """Class bits of every code point, built once on first use (about a second)."""
    # Every code point as one str, decoded from an array: "".join(map(chr, ...)) first made 1.1 million
    # str objects, and with the categories' join below that took a model load's peak RSS from 157 MB to
    # 234 MB (measured; the table is the same, built in half the time).
    code_points = np.arange(sys.maxunicode + 1, dtype="<u4")
    everything = code_points.tobytes().decode("utf-32-le", "surrogatepass")
    classes = np.zeros(len(everything), dtype=np.uint8)
    for run in re.finditer(r"\w+", everything):  # the same \w as the regexes these rules replace
        classes[run.start() : run.end()] |= _WORD
    classes[np.fromiter(map(str.isspace, everything), dtype=bool, count=len(everything))] |= _WHITESPACE
    classes[_NEWLINE] ^= _WHITESPACE
    categories = np.empty(len(everything), dtype=np.uint8)  # the major class: "P" punctuation, "S" symbol
    for start in range(0, len(everything), _CATEGORY_CHUNK):  # a chunk at a time: bounded temporaries
        chunk = everything[start : start + _CATEGORY_CHUNK]
        pairs = "".join(map(unicodedata.category, chunk)).encode("ascii")
        categories[start : start + len(chunk)] = np.frombuffer(pairs, dtype=np.uint8)[::2]
    classes[(categories == ord("P")) | (categories == ord("S"))] |= _PADDED
    for attached in "'_@":
        classes[ord(attached)] ^= _PADDED
    classes[(classes & _WORD) != 0] |= _SQUASHED
    for repeated in "!?.":
        classes[ord(repeated)] |= _SQUASHED
    return classes
