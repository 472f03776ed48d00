"""Pydantic contracts shared by the worker, the API and training.

Everything that crosses a process boundary (Kafka records, HTTP bodies, published model metadata) is
described here once, so producers and consumers cannot drift apart. The HTTP bodies live in
``schemas.api``, and the reputation stage's records in ``schemas.reputation``, imported by those who
use them: the worker starts without their validators.
"""

from schemas.deadletter import DeadLetterHeader, DeadLetterReason
from schemas.labels import LABELS, Label
from schemas.mention import MAX_TEXT_CHARS, Mention
from schemas.model_info import ModelFile, ModelInfo, ModelRef
from schemas.sentiment import LabelScores, SentimentResult

__all__ = [
    "LABELS",
    "MAX_TEXT_CHARS",
    "DeadLetterHeader",
    "DeadLetterReason",
    "Label",
    "LabelScores",
    "Mention",
    "ModelFile",
    "ModelInfo",
    "ModelRef",
    "SentimentResult",
]
