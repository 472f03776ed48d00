"""HTTP bodies of the API sidecar."""

from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from schemas.labels import Label
from schemas.mention import MAX_TEXT_CHARS, NonBlankStr
from schemas.model_info import ModelRef
from schemas.sentiment import LabelScores

#: Most texts one `/predict/batch` call may carry.
MAX_BATCH_TEXTS: Final = 1_000

ApiText = Annotated[NonBlankStr, Field(max_length=MAX_TEXT_CHARS, examples=["I love this phone!"])]


class PredictRequest(BaseModel):
    """``POST /predict`` body."""

    model_config = ConfigDict(extra="forbid")

    text: ApiText


class PredictResponse(BaseModel):
    """One prediction: the seed's ``label``/``score`` plus all class probabilities and the model."""

    label: Label
    score: float
    scores: LabelScores
    model: ModelRef


class BatchPredictRequest(BaseModel):
    """``POST /predict/batch`` body."""

    model_config = ConfigDict(extra="forbid")

    texts: Annotated[list[ApiText], Field(min_length=1, max_length=MAX_BATCH_TEXTS)]


class BatchPrediction(BaseModel):
    """One item of a batch answer (the model is named once for the whole batch)."""

    label: Label
    score: float
    scores: LabelScores


class BatchPredictResponse(BaseModel):
    """``POST /predict/batch`` answer: results in request order."""

    model: ModelRef
    results: list[BatchPrediction]


__all__ = [
    "MAX_BATCH_TEXTS",
    "BatchPredictRequest",
    "BatchPredictResponse",
    "BatchPrediction",
    "PredictRequest",
    "PredictResponse",
    "StrictStr",
]
