"""The one preprocessing: safe for fastText, stable, the same wherever it is called, and exactly the
per-text code the published models were trained with (frozen below as the oracle)."""

# ruff: noqa: RUF001  (look-alike characters are what these tests are about)

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from sentiment_model import _fastnormalize, normalize
from sentiment_model import normalize_text as normalize_text_module
from sentiment_model.normalize import clean, normalize_batch
from training.data import SPLITS, load_split

# ---- The oracle: the per-text implementation before normalize_batch, frozen (do not "fix" it). ----

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


def _old_unescape(text: str) -> str:
    if "\\u" not in text and "&" not in text:
        return text
    for _ in range(3):
        unescaped = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
        unescaped = _ENTITY.sub(lambda m: _ENTITIES.get(m.group(0), "'"), unescaped)
        if unescaped == text:
            break
        text = unescaped
    return text


@lru_cache(maxsize=1)
def _old_spacing_table() -> dict[int, str]:
    return {
        cp: f" {chr(cp)} "
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp))[0] in "PS" and chr(cp) not in _KEEP_ATTACHED
    }


def old_clean(text: str) -> str:
    text = _old_unescape(text.strip())
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_TYPOGRAPHY).strip()
    while len(text) > 1 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].strip()
    if "://" in text or "www." in text.lower():
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
    spaced = text.translate(_old_spacing_table())
    if "'" in spaced:
        spaced = _LONE_APOSTROPHE.sub(" ' ", spaced)
    return " ".join(spaced.split())


@lru_cache(maxsize=1)
def _old_lexicon() -> tuple[dict[str, float], dict[str, str]]:
    analyzer = SentimentIntensityAnalyzer()
    return dict(analyzer.lexicon), dict(analyzer.emojis)


def _old_valence(token: str) -> float:
    words, emojis = _old_lexicon()
    if token in words:
        return words[token]
    if len(token) == 1 and token in emojis:
        return sum(words.get(w, 0.0) for w in emojis[token].lower().split())
    return 0.0


def _old_lexicon_tokens(tokens: list[str]) -> list[str]:
    words, emojis = _old_lexicon()
    extra: list[str] = []
    negated_until = -1
    for i, token in enumerate(tokens):
        if token in _NEGATIONS:
            negated_until = i + 3
            continue
        if token in _CLAUSE_END:
            negated_until = -1
        score = words.get(token)
        if score is None:
            if len(token) != 1 or token not in emojis:
                continue
            score = _old_valence(token)
        if abs(score) < 0.5:
            continue
        if i <= negated_until:
            score = -score
        extra.append("__lexpos__" if score > 0 else "__lexneg__")
    return extra


def old_normalize(text: str) -> str:
    tokens = old_clean(text).split()
    return " ".join(tokens + _old_lexicon_tokens(tokens))


# ---- Inputs that exercise every rule, and every place where texts joined in a batch could touch. ----

_PIECES = [
    *["\\u2019", "\\u000a", "\\u000A", "\\u0022", "\\u0027", "\\u00a0", "\\u03a3", "\\u0130", "\\ud83d"],
    *["\\ude00", "\\u005cu0041", "\\u005c", "\\uffff", "\\u", "\\u12", "&amp;", "&quot;", "&nbsp;"],
    *["&#39;", "&#039;", "&apos;", "&gt;", "&lt;", "&amp;quot;", "&amp;amp;amp;", "&", "&#x27;"],
    *["http://", "https://t.co/X", "HTTPS://", "www.", "WwW.", "wWw.x", "httpſ://", "://", "ftp://x"],
    *["@User", "@", "@_", "#tag", "#", "##", '"', '""', "“", "”", "‘", "’", "…", "–", "—", "＂"],
    *["Σ", "ΑΣ", "ΑΣ'", "σ", "ς", "İ", "I", "ı", "i̇", "ﬁ", "ﬀ", "Ａ", "ｗｗｗ．", "！", "？", "ǅ", "ß"],
    *["ẞ", "K", "Å", "ſ", "ℌ", "①", "²", "½", "¨", "΄", "\u0301", "e\u0301", "\u0308", "\u1100\u1161"],
    *["😀", "👍🏽", "❤️", "☹", ":)", ":-(", "<3", "'", "''", "'s", "n't", "o'", "...", "!!!", "?!?!"],
    *["..", "!!", "??", "loooool", "2000", "___", "ééé", "ΣΣΣ", "not", "no", "never", "don't", "good"],
    *["bad", "love", "hate", "great", "very", "without", "nothing", ",", ".", ";", ":", "?", "!"],
    *["\n", "\r\n", "\r", "\t", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u2028"],
    *["\u2029", "\u00a0", "\u1680", "\u2000", "\u200a", "\u202f", "\u205f", "\u3000", "\u200b", "\ufeff"],
    *["\u180e", "\x00", "\x7f", "\uffff", "\ufffe", "\U0010ffff", "\ud800", "\udfff", " ", "  ", "a", "Z"],
]
_whitespace = st.sampled_from([c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()])
_pieces = st.one_of(st.sampled_from(_PIECES), st.text(max_size=6), _whitespace, st.characters())
texts_strategy = st.lists(_pieces, max_size=24).map("".join)
batches_strategy = st.lists(texts_strategy, max_size=8)


_PATHS = ["C", "no C"]


@pytest.fixture(scope="module", autouse=True, params=_PATHS)
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test twice: with the compiled normaliser (which takes the pure-ASCII texts, the Python rules
    the rest) and without it (everything in Python, as where it is not built)."""
    saved_c = getattr(normalize_text_module, "_fastnormalize")  # noqa: B009 - a module attribute the test swaps
    if request.param == "no C":
        setattr(normalize_text_module, "_fastnormalize", None)  # noqa: B010
    yield request.param
    setattr(normalize_text_module, "_fastnormalize", saved_c)  # noqa: B010


@pytest.fixture(scope="module")
def tweeteval_texts(data_dir: Path) -> list[str]:
    return [text for split in SPLITS for text in load_split(split, data_dir).texts]


@pytest.fixture(scope="module")
def tweeteval_expected(tweeteval_texts: list[str]) -> list[str]:
    return [old_normalize(text) for text in tweeteval_texts]


def test_batch_equals_the_per_text_code_on_all_of_tweeteval(
    tweeteval_texts: list[str], tweeteval_expected: list[str]
) -> None:
    assert len(tweeteval_texts) > 59_000
    expected = tweeteval_expected
    assert normalize_batch(tweeteval_texts) == expected
    # The cleaning alone too, and batches of other sizes (each text's neighbours differ).
    assert [clean(t) for t in tweeteval_texts[:5_000]] == [old_clean(t) for t in tweeteval_texts[:5_000]]
    assert normalize_batch(tweeteval_texts[1:2_000:7]) == expected[1:2_000:7]


@settings(max_examples=300, deadline=None)
@given(batches_strategy)
def test_batch_equals_the_per_text_code_on_fuzzed_unicode(texts: list[str]) -> None:
    assert normalize_batch(texts) == [old_normalize(t) for t in texts]
    assert [clean(t) for t in texts] == [old_clean(t) for t in texts]


@settings(max_examples=300, deadline=None)
@given(texts_strategy)
def test_one_text_equals_the_per_text_code(text: str) -> None:
    assert normalize(text) == old_normalize(text)
    assert clean(text) == old_clean(text)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_plain_hypothesis_text(text: str) -> None:
    assert normalize(text) == old_normalize(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        '"',
        '""',
        '" "',
        '"""a"""',
        '"a" "b"',
        "&quot;hi&quot;",  # an entity spells the quotes, which are then removed
        '&nbsp;"hi"',  # unescaping makes leading whitespace that an ASCII text keeps: the quotes stay
        '\\u00a0"hi"',  # the same through NFKC, which strips again: the quotes go
        "a\\u000ab",  # an escape spells a newline inside a text
        "can\\u2019t see",  # an ASCII text that unescaping makes non-ASCII: NFKC and typography apply
        "\\u2019\U0010ffff",  # a text holding the separator the escapes of a batch are folded with
        "&quot;http://x.y&quot;",  # an escape makes outer quotes; the URL check comes after
        "http\\u003a//x.y www&#39;",  # an escape makes the URL trigger
        "“quoted” ＂too＂",  # typography and NFKC make outer quotes
        "\\u005cu0041",  # an escape spells another escape
        "&amp;amp;amp;amp;",  # more rounds than unescape does
        "\\ud83d\\ude00 pair of lone surrogates",
        "ΑΣ",
        "ΑΣhttp://x.y",  # the final sigma looks at what follows: the URL is masked first
        "ΑΣ@John",
        "ΑΣ\u0301 x",
        "İstanbul İİİ",  # lower() makes two characters of one
        "İ www.x.com WWW.Y",  # ...so positions in the lower-cased batch are not the batch's own
        "ﬁﬁﬁ ﬃ",
        "ｗｗｗ．ｘ．ｃｏｍ ＃ｔａｇ",
        "WWW.X.COM and Www.y and httpſ://z",
        "x://y no scheme",
        "loooove!!!!!???....",
        "aaa\u0301",
        "it's 'quoted' o' 'tis _'_ @'x",
        "#tag ##x #_a #'a",
        "don't like it. love it",
        "not, good",
        "never ever ever good",
        "no good bad",
        "😀😀😀 👍🏽 ☹",
        "a\x1cb\x1dc\x1ed\x1fe\x85f\u2028g\u2029h\u3000i",
        "tab\tand\r\nnewline\n\n",
        "\uffff",
        "a \uffff b",
        "aaa bbb!!! ???  ccc\ndddd",  # squashed runs right before whitespace, a separator, punctuation
        "yesss. nooo, sooo'",
        "\U0010ffff",
        "x\x00y",
        "a" * 100_000,
        "http://" + "x" * 50_000,
        "\\u2019" * 5_000,
        "good " * 20_000,
    ],
)
def test_tricky_cases(text: str) -> None:
    expected = old_normalize(text)
    assert normalize(text) == expected
    # ...also between neighbours that share every boundary character.
    batch = ['"', text, "ΑΣ", text, "@", "\\u", text, "&amp", ""]
    assert normalize_batch(batch) == [old_normalize(t) for t in batch]


def test_batch_edge_shapes() -> None:
    assert normalize_batch([]) == []
    assert normalize_batch(["", ""]) == ["", ""]
    assert normalize_batch(("I love it", "I hate it")) == ["i love it __lexpos__", "i hate it __lexneg__"]
    # a negation never reaches into the next text
    assert normalize_batch(["not", "good"]) == ["not", "good __lexpos__"]
    shifted = ["İ", "go to www.x.com", "WWW.Y.Z now", "http://a.b"]  # U+0130 lengthens the lower case
    assert normalize_batch(shifted) == [old_normalize(t) for t in shifted]
    negations = ["not", "good", "not,", "good", "not good", "no. good", "good not", "not a b c good"]
    assert normalize_batch(negations) == [old_normalize(t) for t in negations]


def test_masks_urls_and_users_and_lowercases() -> None:
    out = normalize("Check https://t.co/abc @JohnDoe NOW!!!")
    assert "t.co" not in out and "johndoe" not in out
    assert out == out.lower() or "URL" in out


@given(st.text())
def test_always_one_line_without_outer_whitespace(text: str) -> None:
    out = normalize(text)
    assert "\n" not in out and "\r" not in out
    assert out == out.strip()
    assert "  " not in out


@given(texts_strategy)
def test_clean_is_idempotent(text: str) -> None:
    once = clean(text)
    assert clean(once) == once


def test_lexicon_tokens_follow_polarity_and_negation() -> None:
    assert normalize("I love this").endswith("__lexpos__")
    assert normalize("I hate this").endswith("__lexneg__")
    assert normalize("this is not good").endswith("__lexneg__")
    assert normalize("not bad at all. great day").split()[-2:] == ["__lexpos__", "__lexpos__"]
    assert "__lex" not in normalize("The store opens at 9am on Monday")


def test_the_python_rules_equal_the_compiled_normaliser_on_all_of_tweeteval(
    tweeteval_texts: list[str],
) -> None:
    """The Python fallback is the compiled code's oracle: the same output for every text it takes."""
    from sentiment_model.normalize_text import normalize_text

    compiled = _compiled().normalize(tweeteval_texts)
    taken = [i for i, text in enumerate(compiled) if text is not None]
    assert len(taken) >= 0.95 * len(tweeteval_texts)
    assert [compiled[i] for i in taken] == [normalize_text(tweeteval_texts[i]) for i in taken]
    assert [normalize_text(t) for t in tweeteval_texts] == normalize_batch(tweeteval_texts)


def test_training_and_serving_share_the_function() -> None:
    import api.model_state
    import training.fasttext_train as ft
    import training.train
    import worker.app
    from sentiment_model import predictor

    for module in (api.model_state, ft, training.train, worker.app, predictor):
        assert module.normalize_batch is normalize_batch  # the same object; nothing is copied


# ---- The compiled normaliser (sentiment_model/_fastnormalize.c): pure-ASCII texts, else None. ----


def _compiled() -> _fastnormalize.Normalizer:
    """The compiled normaliser itself, whichever path the module runs with."""
    return normalize_text_module._build_compiled_normalizer()


def test_the_compiled_normaliser_is_built_and_used(path: str) -> None:
    # Built by the package install (pyproject's ext-modules); this fails, not skips, when it is missing.
    assert _fastnormalize is not None, "sentiment_model._fastnormalize is not built"
    assert (normalize_text_module.compiled_normalizer() is not None) == (path == "C")


def test_the_compiled_normaliser_handles_every_ascii_tweeteval_text(
    tweeteval_texts: list[str], tweeteval_expected: list[str]
) -> None:
    compiled = _compiled().normalize(tweeteval_texts)
    handled = [i for i, text in enumerate(compiled) if text is not None]
    # 57,298 of 59,899 (95.7%): every ASCII text (their escapes are all "\u002c" and "\u2019"); the
    # other texts hold a non-ASCII character.
    assert len(handled) >= 0.95 * len(tweeteval_texts)
    assert [text is not None for text in compiled] == [text.isascii() for text in tweeteval_texts]
    assert [compiled[i] for i in handled] == [tweeteval_expected[i] for i in handled]


_ASCII_PIECES = [piece for piece in _PIECES if piece.isascii()]
_ascii = st.characters(max_codepoint=127)
_ascii_pieces = st.one_of(st.sampled_from(_ASCII_PIECES), st.text(alphabet=_ascii, max_size=6))
ascii_texts = st.one_of(st.text(alphabet=_ascii), st.lists(_ascii_pieces, max_size=24).map("".join))
# The escapes the compiled code takes: of a character that is not alphanumeric, "\", "&", ";" or "#"
# (which could spell another escape or an entity), or of a typography character whose fold is ASCII.
_TAKEN = {*(chr(c) for c in range(128) if not chr(c).isalnum() and chr(c) not in "\\&;#")}
_TAKEN |= {*"\u2019\u2018\u201c\u201d\u2026\u00a0\u2013\u2014"}


def _compiled_takes(text: str) -> bool:
    """Whether the compiled code handles this ASCII text: unless it holds an escape it leaves."""
    return all(chr(int(m.group(1), 16)) in _TAKEN for m in re.finditer(r"\\u([0-9a-fA-F]{4})", text))


def _check_compiled(text: str) -> None:
    expected = old_normalize(text)
    assert normalize(text) == expected
    assert _compiled().normalize([text]) == [expected if _compiled_takes(text) else None]


@settings(max_examples=500, deadline=None)
@given(ascii_texts)
def test_compiled_normaliser_on_fuzzed_ascii(text: str) -> None:
    _check_compiled(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(ascii_texts, texts_strategy), min_size=10, max_size=40))
def test_compiled_and_python_results_keep_their_places_in_a_batch(texts: list[str]) -> None:
    assert normalize_batch(texts) == [old_normalize(t) for t in texts]


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f ",
        "\x1c",
        "\x1ca\x1fb\x1c",
        "\x00",
        "x\x00y \x7f \x01\x08\x0e\x1b",
        "!!!...???",
        "!?!?.!.!?? ...... !!",
        "'''",
        "' a'b 'c' d' _'_ x'_ 9'9",
        "@@user",
        "@",
        "@_ @9 a@b @'x x'@y @@@",
        "@Bob's aa@bbb",
        "#",
        "##tag #_ #'a #9x",
        "www.",
        "www.x",
        "wwww.x WWW.Y.COM Www.z",
        "HTTP://X",
        "http://",
        "http:// x",
        "https:/x http:/ ://x",
        "HtTpS://a.b/c?d=1!!! next",
        "xhttp://y@z @http://u",
        '""a""',
        '"',
        '"a"b"',
        '" "x" "',
        '"""',
        "&amp;",
        "&amp;amp;amp;amp;",
        "&&amp; &amp &lt;3 &gt; &#39;s &#039; &apos; &quot;x&quot; &nbsp;",
        '&nbsp;"hi"',
        "&quot;hi&quot;",
        "&quot;http://x.y&quot;",
        "\\u2019",
        "can\\u2019t \\u2018x\\u2019 \\u201chi\\u201D wait\\u2026 a\\u2013b\\u2014c",
        '\\u00a0"hi"\\u00A0',
        '\\u201c"hi"\\u201d',
        "a\\u002cb\\u0022 \\u0027x\\u0027 \\u000a\\u0009 \\u0021\\u0021\\u0021",
        "\\u002c\\u002C",
        "\\u0041",  # an escaped letter: left to Python
        "\\u005cu0041",  # an escape that spells another: left to Python
        "&\\u0023039;",  # an escape that spells an entity: left to Python
        "\\u00e9",  # a non-ASCII character outside the folds: left to Python
        "\\u \\u12 \\u12g4 \\\\u2019",
        "loooooove sooo goood",
        "AAA aAa Aaa 111 ___",
        "not good",
        "not. good",
        "not, good",
        "not a b good",
        "not a b c good",
        "never ever ever good",
        "no good bad",
        "don't like it. love it",
        "can't stand it",
        "l",
        ":) :-( <3 :D",
        "I love it",
        "a" * 100_000,
        "good " * 20_000,
        "@x" * 10_000,
        "http://" + "x" * 50_000,
        "!" * 10_000 + "a'" * 10_000,
        "\\u2019" * 5_000,
        "&amp;" * 5_000,
    ],
)
def test_compiled_normaliser_tricky_ascii_cases(text: str) -> None:
    _check_compiled(text)
    batch = [text, "ΑΣ", text, "@", "\\u0041", text, *[text] * 15]
    assert normalize_batch(batch) == [old_normalize(t) for t in batch]


def test_compiled_normaliser_returns_none_for_what_it_leaves() -> None:
    texts: list[Any] = ["a", "é", "\ud800", 3, "\\u0041", "Bb"]
    assert _compiled().normalize(texts) == ["a", None, None, None, None, "bb"]
    assert _compiled().normalize(iter(["a", "b"])) == ["a", "b"]  # type: ignore[arg-type]
    assert _compiled().normalize([]) == []


def test_compiled_normaliser_checks_its_rules() -> None:
    rules = {
        "padded": "#!",
        "entities": {"&amp;": "&"},
        "folds": {0x2019: "'"},
        "positive": "__lexpos__",
        "negative": "__lexneg__",
        "negation_reach": 3,
        "positive_bit": 1,
        "negative_bit": 2,
        "negation_bit": 4,
        "clause_bit": 8,
    }
    _fastnormalize.Normalizer({"good": 1}, **rules)  # type: ignore[arg-type]
    for wrong in [
        {"padded": "!"},  # the hashtag rule needs "#" padded
        {"padded": "#'"},
        {"padded": "#@"},
        {"padded": "#a"},
        {"padded": "# "},
        {"padded": "#é"},
        {"entities": {"&amp": "&"}},
        {"entities": {"&amp;": "a"}},  # could spell an escape
        {"entities": {"&amp;": "\\"}},
        {"entities": {"&amp;": "&&"}},
        {"folds": {0x2019: "a"}},  # a fold must not spell an escape or an entity
        {"folds": {0x2019: "&"}},
        {"folds": {0x41: "'"}},
        {"folds": {0x2019: "é"}},
        {"positive": "é"},
        {"negation_reach": -1},
    ]:
        with pytest.raises(ValueError):
            _fastnormalize.Normalizer({"good": 1}, **{**rules, **wrong})  # type: ignore[arg-type, dict-item]
    with pytest.raises(TypeError):
        _fastnormalize.Normalizer({1: 1}, **rules)  # type: ignore[arg-type, dict-item]


def test_the_entities_given_to_the_compiled_code_are_the_patterns() -> None:
    entities = normalize_text_module._ENTITIES
    assert all(normalize_text_module._ENTITY.fullmatch(entity) for entity in entities)
    spelled = {"&amp;", "&gt;", "&lt;", "&quot;", "&#39;", "&#039;", "&nbsp;", "&apos;"}  # the pattern's
    assert set(entities) == spelled
