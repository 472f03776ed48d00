"""The one model package: text normalisation, model resolution (Hub or disk) and batch prediction.

Training, the worker and the API all import from here, so the text a model is trained on and the text it
is asked about always go through the same code: :func:`normalize_batch` (:func:`normalize` is a batch of
one).
"""

from sentiment_model.errors import ModelCannotExplainError, ModelError, ModelLoadError, ModelNotFoundError
from sentiment_model.normalize import normalize, normalize_batch
from sentiment_model.predictor import Predictor, ScoredBatch
from sentiment_model.resolve import ResolvedModel, resolve_model
from sentiment_model.settings import ModelSettings

__all__ = [
    "ModelCannotExplainError",
    "ModelError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelSettings",
    "Predictor",
    "ResolvedModel",
    "ScoredBatch",
    "normalize",
    "normalize_batch",
    "resolve_model",
]
