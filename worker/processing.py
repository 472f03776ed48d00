"""Batch processing: raw records in, output records (results and dead letters) out. No Kafka I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from schemas import DeadLetterHeader, DeadLetterReason, Mention, ModelRef
from sentiment_model import ScoredBatch

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
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


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


def split_batch(records: list[Any]) -> tuple[list[Valid], list[Rejected]]:
    """Validate many: the valid records and the rejected ones, each in consumption order."""
    valid: list[Valid] = []
    rejected: list[Rejected] = []
    for record in records:
        outcome = validate(record)
        (valid if isinstance(outcome, Valid) else rejected).append(outcome)  # type: ignore[arg-type]
    return valid, rejected


def result_documents(valid: list[Valid], scored: ScoredBatch, model: ModelRef, now: datetime) -> list[bytes]:
    """Serialised result events (see :class:`schemas.SentimentResult`), one per valid record."""
    processed_at = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
    model_doc = {"repo": model.repo, "revision": model.revision, "sha256": model.sha256}
    out: list[bytes] = []
    for item, label, row in zip(valid, scored.labels, scored.probabilities.tolist(), strict=True):
        mention = item.mention
        document: dict[str, Any] = dict(mention.model_extra or {})  # extra fields first: ours win on clashes
        document.update(
            id=mention.id,
            label=label,
            score=max(row),
            scores={"negative": row[0], "neutral": row[1], "positive": row[2]},
            model=model_doc,
            brand=mention.brand,
            source=mention.source,
            created_at=mention.created_at,
            processed_at=processed_at,
        )
        out.append(orjson.dumps(document))
    return out


def result_key(record: Any, mention: Mention) -> bytes:
    """The input's key, or the post id when the input had none: one post's results stay in one partition."""
    key = record.key()
    return key if key is not None else mention.id.encode("utf-8")


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
