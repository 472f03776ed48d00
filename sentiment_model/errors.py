"""Explicit exception types: a model problem is always one of these, never a made-up prediction."""


class ModelError(Exception):
    """Base class of every model problem; ``str(error)`` is meant for a person."""


class ModelNotFoundError(ModelError):
    """No model file where we were told to look (local path, Hub repo, revision or offline cache)."""


class ModelLoadError(ModelError):
    """A model file was found but is not a usable sentiment model (corrupt, truncated, wrong labels)."""


class ModelCannotExplainError(ModelError):
    """The loaded model is scored by fastText, which cannot say how each token contributed."""
