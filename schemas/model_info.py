"""Identity of a loaded model, as stamped on every result and shown by the API."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.labels import LABELS, Label


class ModelRef(BaseModel):
    """Which model file scored a result: enough to fetch exactly that file again."""

    model_config = ConfigDict(frozen=True)

    repo: str
    """Hub repo id, or ``local`` for a model loaded from ``MODEL_PATH``."""
    revision: str | None
    """Resolved Hub commit sha (never a branch name), None for a local file."""
    sha256: str
    """sha256 of the model file's bytes."""


class ModelFile(BaseModel):
    """Which model file: where it was resolved from, its name and its content hash."""

    repo: str
    revision: str | None
    file: str
    sha256: str


class ShadowCandidate(ModelFile):
    """A newer model in shadow evaluation: it scores live texts unseen, then is promoted or rejected."""

    records: int
    """Live texts it has scored in shadow so far."""
    records_needed: int
    """After this many texts it is promoted or rejected (``SHADOW_RECORDS``)."""


class ModelInfo(ModelFile):
    """What ``GET /model`` answers: the model's identity plus its published training metrics."""

    labels: tuple[Label, ...] = LABELS
    loaded_at: datetime
    metrics: dict[str, Any] | None = None
    """The ``metrics.json`` published beside the model file, when there is one."""
    candidate: ShadowCandidate | None = None
    """The newer model being evaluated in shadow, if any (hot reload)."""
