"""HTTP bodies of the API sidecar."""

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from schemas.labels import Label
from schemas.mention import MAX_TEXT_CHARS, NonBlankStr
from schemas.model_info import ModelRef
from schemas.sentiment import LabelScores

#: Most texts one `/predict/batch` call may carry.
MAX_BATCH_TEXTS: Final = 1_000

ApiText = Annotated[NonBlankStr, Field(max_length=MAX_TEXT_CHARS, examples=["I love this phone!"])]


_EXPLAIN_FIELD = Field(
    default=False, description="Also return each token's contribution to each class (see `Explanation`)"
)


class PredictRequest(BaseModel):
    """``POST /predict`` body."""

    model_config = ConfigDict(extra="forbid")

    text: ApiText
    explain: StrictBool = _EXPLAIN_FIELD


class LabelLogits(BaseModel):
    """One number per class, in logit space (any sign, not probabilities)."""

    negative: float
    neutral: float
    positive: float


class TokenContribution(BaseModel):
    """How much one token of the normalised text moved each class logit."""

    token: str = Field(
        description='a word, a lexicon token such as "__lexneg__", a word pair "w1 w2", or "</s>"'
    )
    contributions: LabelLogits


class Explanation(BaseModel):
    """Why the model gave its scores, exactly: the model is linear, so each token's share is exact.

    The text is normalised first (as for scoring), and fastText adds the end-of-text token ``</s>``.
    Every token the model has a vector for, every word pair (``"w1 w2"``, the model's bigrams) it kept,
    and ``</s>`` each get one row; a token's contribution to class ``c`` is
    ``(output_c · row) / number_of_rows`` (repeated tokens are added together). Words and pairs the
    model does not know contribute nothing and are not listed. Identity (to 1e-5):

    * ``logits[c] == sum(t.contributions[c] for t in tokens)``;
    * ``scoring == "sigmoid"`` (a one-vs-all model): ``p_c = sigmoid(floor((logits[c] + 8) * 32) / 32 - 8)``,
      0 below -8 and 1 above 8 (fastText's 512-step sigmoid table, index computed in float32 as
      fastText does), each class on its own;
      ``scoring == "softmax"``: ``p = softmax(logits)``;
    * ``scores[c] == min(p_c + 1e-5, 1) / sum_k min(p_k + 1e-5, 1)`` (fastText reports ``p + 1e-5``;
      the API rescales the three to sum to 1).

    ``tokens`` are ordered by their contribution to the predicted ``label``, largest first: the first
    token is the one that pushed hardest towards the answer.
    """

    scoring: Literal["sigmoid", "softmax"]
    logits: LabelLogits
    tokens: list[TokenContribution]


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
    explain: StrictBool = _EXPLAIN_FIELD


class BatchPrediction(BaseModel):
    """One item of a batch answer (the model is named once for the whole batch)."""

    label: Label
    score: float
    scores: LabelScores


class BatchPredictResponse(BaseModel):
    """``POST /predict/batch`` answer: results in request order."""

    model: ModelRef
    results: list[BatchPrediction]


class ExplainedPredictResponse(PredictResponse):
    """``POST /predict`` with ``"explain": true``."""

    explanation: Explanation


class ExplainedBatchPrediction(BatchPrediction):
    """One item of a batch answer with ``"explain": true``."""

    explanation: Explanation


class ExplainedBatchPredictResponse(BaseModel):
    """``POST /predict/batch`` answer with ``"explain": true``."""

    model: ModelRef
    results: list[ExplainedBatchPrediction]


__all__ = [
    "MAX_BATCH_TEXTS",
    "BatchPredictRequest",
    "BatchPredictResponse",
    "BatchPrediction",
    "ExplainedBatchPredictResponse",
    "ExplainedBatchPrediction",
    "ExplainedPredictResponse",
    "Explanation",
    "LabelLogits",
    "PredictRequest",
    "PredictResponse",
    "StrictStr",
    "TokenContribution",
]
