"""The one preprocessing: safe for fastText, stable, and the same wherever it is called."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sentiment_model import normalize
from sentiment_model.normalize import clean


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


@given(st.text())
def test_clean_is_idempotent(text: str) -> None:
    once = clean(text)
    assert clean(once) == once


def test_lexicon_tokens_follow_polarity_and_negation() -> None:
    assert normalize("I love this").endswith("__lexpos__")
    assert normalize("I hate this").endswith("__lexneg__")
    assert normalize("this is not good").endswith("__lexneg__")
    assert normalize("not bad at all. great day").split()[-2:] == ["__lexpos__", "__lexpos__"]
    assert "__lex" not in normalize("The store opens at 9am on Monday")


def test_training_and_serving_share_the_function() -> None:
    import api  # noqa: F401  (the packages import the same object; nothing is copied)
    import training.fasttext_train as ft
    import worker  # noqa: F401
    from sentiment_model import predictor

    assert ft.normalize is normalize
    assert predictor.normalize is normalize
