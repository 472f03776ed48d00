"""``"explain": true``: each token's exact share of the scores (see :class:`schemas.api.Explanation`)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.responses import JSONResponse

from api.bodies import Problem
from schemas import LABELS, Label
from schemas.api import Explanation, LabelLogits, TokenContribution
from sentiment_model import ModelCannotExplainError, Predictor, normalize
from sentiment_model.linear_scorer import LinearScorer

#: Answered when the loaded model is scored by fastText (e.g. char n-grams): the request is fine, this
#: server's model cannot do it.
CANNOT_EXPLAIN_STATUS = 501


def explain(predictor: Predictor, texts: Sequence[str], labels: Sequence[Label]) -> list[Explanation]:
    """One explanation per text, tokens ordered by contribution to that text's predicted label.

    Raises :class:`ModelCannotExplainError` when fastText scores the model. Per text in Python: this
    is a diagnostic path, not the scoring hot path.
    """
    scorer = predictor.scorer
    if not isinstance(scorer, LinearScorer):
        why = predictor.scorer_reason or "it is scored by fastText"
        raise ModelCannotExplainError(f"the loaded model cannot explain its scores: {why}")
    scoring = "sigmoid" if scorer.loss == "ova" else "softmax"
    out = []
    for text, label in zip(texts, labels, strict=True):
        found = predictor.explain_normalized(normalize(text))
        column = LABELS.index(label)
        ranked = sorted(found.tokens, key=lambda item: -item[1][column])
        tokens = [
            TokenContribution(
                token=token, contributions=LabelLogits(**dict(zip(LABELS, values, strict=True)))
            )
            for token, values in ranked
        ]
        out.append(Explanation(scoring=scoring, logits=_logits(found.logits), tokens=tokens))
    return out


def _logits(values: tuple[float, float, float]) -> LabelLogits:
    return LabelLogits(**dict(zip(LABELS, values, strict=True)))


def cannot_explain(error: ModelCannotExplainError) -> JSONResponse:
    """The 501 answer for a model without explanations."""
    return JSONResponse(Problem(detail=str(error)).model_dump(), status_code=CANNOT_EXPLAIN_STATUS)
