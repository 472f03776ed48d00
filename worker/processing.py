"""The per-record path of a special record: the contract's verdict on one record, and dead-letter and
model headers. The batch stages are in :mod:`worker.batch`. No Kafka I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from schemas import DeadLetterHeader, DeadLetterReason, Mention, ModelRef
from schemas.validation import describe_error

MODEL_REPO_HEADER = "model-repo"
MODEL_REVISION_HEADER = "model-revision"
MODEL_SHA256_HEADER = "model-sha256"
#: Exactly-once only: ``<client.id>/<n>``, the transaction that wrote the record (for audits and tests).
TRANSACTION_HEADER = "txn"


@dataclass(slots=True)
class Valid:
    """A record that passed the contract."""

    record: Any  # confluent_kafka.Message
    mention: Mention


@dataclass(slots=True)
class Rejected:
    """A record that goes to the dead-letter topic, and why."""

    record: Any
    reason: DeadLetterReason
    detail: str


def _describe(error: ValidationError) -> str:
    """The first five contract violations, in the same words as the API's 422s."""
    return "; ".join(
        describe_error(item) for item in error.errors(include_url=False, include_input=False)[:5]
    )


def validate(record: Any) -> Valid | Rejected:
    """Decode and check one record against the :class:`Mention` contract."""
    value = record.value()
    if value is None:
        return Rejected(record, DeadLetterReason.UNDECODABLE, "record has no value (tombstone)")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(record, DeadLetterReason.UNDECODABLE, f"not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Rejected(record, DeadLetterReason.INVALID_JSON, f"invalid JSON: {exc}")
    if not isinstance(payload, dict):
        return Rejected(
            record, DeadLetterReason.NOT_AN_OBJECT, f"expected a JSON object, got {type(payload).__name__}"
        )
    try:
        return Valid(record, Mention.model_validate(payload))
    except ValidationError as exc:
        return Rejected(record, DeadLetterReason.SCHEMA_VIOLATION, _describe(exc))


def model_headers(model: ModelRef) -> list[tuple[str, str | bytes | None]]:
    """Headers naming the model on every result."""
    return [
        (MODEL_REPO_HEADER, model.repo.encode()),
        (MODEL_REVISION_HEADER, (model.revision or "").encode()),
        (MODEL_SHA256_HEADER, model.sha256.encode()),
    ]


def dead_letter_headers(rejected: Rejected, worker_id: str) -> list[tuple[str, str | bytes | None]]:
    """The original headers plus ours (see :mod:`schemas.deadletter`)."""
    record = rejected.record
    original: list[tuple[str, str | bytes | None]] = list(record.headers() or [])
    _kind, timestamp = record.timestamp()
    return [
        *original,
        (DeadLetterHeader.REASON.value, rejected.reason.value.encode()),
        (DeadLetterHeader.ERROR.value, rejected.detail[:2000].encode()),
        (DeadLetterHeader.TOPIC.value, record.topic().encode()),
        (DeadLetterHeader.PARTITION.value, str(record.partition()).encode()),
        (DeadLetterHeader.OFFSET.value, str(record.offset()).encode()),
        (DeadLetterHeader.TIMESTAMP.value, str(timestamp).encode()),
        (DeadLetterHeader.WORKER.value, worker_id.encode()),
    ]
