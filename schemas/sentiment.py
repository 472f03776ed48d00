"""Output event on the `sentiment` topic: the score of one post."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.labels import Label
from schemas.model_info import ModelRef

Probability = float


class LabelScores(BaseModel):
    """Probability of each class; the three add up to 1 (within float error)."""

    model_config = ConfigDict(frozen=True)

    negative: float = Field(ge=0.0, le=1.0)
    neutral: float = Field(ge=0.0, le=1.0)
    positive: float = Field(ge=0.0, le=1.0)


class SentimentResult(BaseModel):
    """One scored post.

    The record key is the input record's key (or the post ``id`` when the input had none) and the header
    ``model-revision`` repeats ``model.revision``. Fields the input carried beyond the known ones are copied
    through unchanged, hence ``extra="allow"``.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    label: Label
    score: float = Field(ge=0.0, le=1.0, description="probability of `label`")
    scores: LabelScores
    model: ModelRef
    brand: str | None = None
    source: str | None = None
    created_at: str | None = None
    processed_at: datetime
