"""The one preprocessing: safe for fastText, stable, and the same wherever it is called."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sentiment_model import normalize


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
def test_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


def test_training_and_serving_share_the_function() -> None:
    import api  # noqa: F401  (the packages import the same object; nothing is copied)
    import training.fasttext_train as ft
    import worker  # noqa: F401
    from sentiment_model import predictor

    assert ft.normalize is normalize
    assert predictor.normalize is normalize
