"""The contracts: what the worker accepts, what it publishes, what the API answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import MAX_TEXT_CHARS, Mention, SentimentResult
from schemas.api import MAX_BATCH_TEXTS, BatchPredictRequest, PredictRequest
from schemas.timestamps import utc_rfc3339


def test_minimal_mention_is_valid() -> None:
    mention = Mention.model_validate({"id": "1", "text": "love it"})
    assert (mention.id, mention.text, mention.brand, mention.created_at) == ("1", "love it", None, None)


def test_unknown_fields_are_kept_for_the_output() -> None:
    mention = Mention.model_validate({"id": "1", "text": "x", "campaign": "spring", "likes": 3})
    assert mention.model_extra == {"campaign": "spring", "likes": 3}


def test_created_at_is_kept_verbatim_and_parsed() -> None:
    mention = Mention.model_validate({"id": "1", "text": "x", "created_at": "2026-11-26T10:15:00.5+01:00"})
    assert mention.created_at == "2026-11-26T10:15:00.5+01:00"
    parsed = mention.created_at_datetime()
    assert parsed is not None and parsed.astimezone(UTC) == datetime(2026, 11, 26, 9, 15, 0, 500000, UTC)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": "x"}, "id"),
        ({"id": "", "text": "x"}, "id"),
        ({"id": "  ", "text": "x"}, "id"),
        ({"id": 7, "text": "x"}, "id"),
        ({"id": "1"}, "text"),
        ({"id": "1", "text": " \n\t "}, "text"),
        ({"id": "1", "text": "x" * (MAX_TEXT_CHARS + 1)}, "text"),
        ({"id": "1", "text": ["a"]}, "text"),
        ({"id": "1", "text": "x", "brand": 3}, "brand"),
        ({"id": "1", "text": "x", "created_at": "yesterday"}, "created_at"),
        ({"id": "1", "text": "x", "created_at": "2026-11-26T10:15:00"}, "created_at"),
        ({"id": "1", "text": "x", "created_at": "2026-11-26"}, "created_at"),
        ({"id": "1", "text": "x", "created_at": 1764150000}, "created_at"),
    ],
)
def test_contract_violations_name_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Mention.model_validate(payload)
    assert field in {str(err["loc"][0]) for err in caught.value.errors()}


def test_text_at_the_limit_is_accepted() -> None:
    assert len(Mention.model_validate({"id": "1", "text": "x" * MAX_TEXT_CHARS}).text) == MAX_TEXT_CHARS


def test_result_contract_round_trips_extra_fields() -> None:
    result = SentimentResult.model_validate(
        {
            "id": "1",
            "label": "positive",
            "score": 0.9,
            "scores": {"negative": 0.05, "neutral": 0.05, "positive": 0.9},
            "model": {"repo": "local", "revision": None, "sha256": "ab" * 32},
            "brand": "acme",
            "processed_at": "2026-11-26T10:15:00Z",
            "campaign": "spring",
        }
    )
    assert result.model_extra == {"campaign": "spring"}
    with pytest.raises(ValidationError):
        SentimentResult.model_validate({**result.model_dump(), "label": "angry"})


def test_api_requests_reject_blank_and_oversized_input() -> None:
    assert PredictRequest.model_validate({"text": "fine"}).text == "fine"
    for bad in ({"text": ""}, {"text": "   "}, {"text": 5}, {}, {"text": "x", "other": 1}):
        with pytest.raises(ValidationError):
            PredictRequest.model_validate(bad)
    with pytest.raises(ValidationError):
        BatchPredictRequest.model_validate({"texts": ["ok"] * (MAX_BATCH_TEXTS + 1)})
    with pytest.raises(ValidationError):
        BatchPredictRequest.model_validate({"texts": []})


def test_timestamps_are_utc_rfc3339_with_z() -> None:
    paris = datetime(2026, 11, 26, 11, 15, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert utc_rfc3339(paris) == "2026-11-26T10:15:00.123456Z"
    assert utc_rfc3339(paris, "milliseconds") == "2026-11-26T10:15:00.123Z"
    assert utc_rfc3339(paris.timestamp(), "seconds") == "2026-11-26T10:15:00Z"
    assert (
        Mention.model_validate(
            {"id": "1", "text": "hi", "created_at": utc_rfc3339(paris)}
        ).created_at_datetime()
        == paris
    )
