"""Dead-letter records on `mentions.dlq`.

Envelope choice: the dead-letter record's **value is the original record's value, byte for byte**, and
its key is the original key; everything we add travels in **headers** (below). Headers keep the original
bytes replayable as they are (fix the producer, re-publish the value to `mentions`) and keep records that
are not even UTF-8 intact, which a JSON envelope could not do without re-encoding them.
"""

from enum import StrEnum


class DeadLetterReason(StrEnum):
    """Why a record could not be scored. A bounded set: it is also a metric label."""

    UNDECODABLE = "undecodable"
    """The value is not UTF-8 (or is missing)."""
    INVALID_JSON = "invalid_json"
    """UTF-8, but not JSON."""
    NOT_AN_OBJECT = "not_an_object"
    """Valid JSON, but not an object (a list, a string, a number...)."""
    SCHEMA_VIOLATION = "schema_violation"
    """A JSON object that breaks the `Mention` contract (missing/empty id or text, too long, wrong type)."""
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    """A valid post whose `lang` is not one the model was trained for (setting `MODEL_LANGUAGES`): it is
    not scored as if it were English. Replay it once a model for that language is published."""


class DeadLetterHeader(StrEnum):
    """Header names on a dead-letter record; values are UTF-8 strings."""

    REASON = "dlq.reason"
    """A `DeadLetterReason` value."""
    ERROR = "dlq.error"
    """Human-readable detail, e.g. `text: String should have at most 10000 characters`."""
    TOPIC = "dlq.source.topic"
    PARTITION = "dlq.source.partition"
    OFFSET = "dlq.source.offset"
    TIMESTAMP = "dlq.source.timestamp"
    """Original record timestamp, milliseconds since the epoch."""
    WORKER = "dlq.worker"
    """`client.id` of the worker that rejected it."""
