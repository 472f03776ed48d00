"""The process's model: resolved and loaded once, in a background thread, so serving starts at once.

Until the load settles, and forever if it fails, requests that need the model get a 503 carrying
:attr:`ModelState.reason`; nothing ever answers with a made-up label.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from schemas import ModelRef
from sentiment_model import ModelError, Predictor, ResolvedModel, ScoredBatch

log = logging.getLogger(__name__)

PredictorLoader = Callable[[Path], Predictor]
Resolver = Callable[[], ResolvedModel]


class ModelStatus(StrEnum):
    """Where loading stands."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class LoadedModel:
    """A predictor plus where it came from; published as one object, so readers never see half of it."""

    predictor: Predictor
    resolved: ResolvedModel
    loaded_at: datetime
    ref: ModelRef = field(init=False)

    def __post_init__(self) -> None:
        # Built once: every response names the model.
        object.__setattr__(self, "ref", self.resolved.ref)


class ModelNotReadyError(Exception):
    """The model is still loading or failed to load; ``str(error)`` says which and why."""

    def __init__(self, status: ModelStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class ModelState:
    """Holds the loaded model, or the reason there is none. Written once by the loader thread."""

    def __init__(self) -> None:
        self._loaded: LoadedModel | None = None
        self._error: str | None = None
        self._settled = threading.Event()
        self.loading_started = False

    @property
    def status(self) -> ModelStatus:
        """Loading, ready or failed."""
        if self._loaded is not None:
            return ModelStatus.READY
        return ModelStatus.FAILED if self._error is not None else ModelStatus.LOADING

    @property
    def loaded(self) -> LoadedModel | None:
        """The model, once loaded."""
        return self._loaded

    @property
    def reason(self) -> str:
        """Why there is no model (empty when there is one)."""
        if self._loaded is not None:
            return ""
        return self._error or "the model is still loading"

    def require(self) -> LoadedModel:
        """The model, or :class:`ModelNotReadyError`."""
        loaded = self._loaded
        if loaded is None:
            raise ModelNotReadyError(self.status, self.reason)
        return loaded

    def predict(self, texts: Sequence[str]) -> ScoredBatch:
        """Score ``texts`` with the loaded model (blocking: call it from a worker thread)."""
        return self.require().predictor.predict(texts)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading succeeded or failed; False on timeout."""
        return self._settled.wait(timeout)

    def load(self, resolve: Resolver, load_predictor: PredictorLoader) -> None:
        """Resolve and load the model, recording the outcome (never raises for a model problem)."""
        try:
            resolved = resolve()
            log.info("loading model %s", resolved.describe())
            loaded = LoadedModel(load_predictor(resolved.path), resolved, datetime.now(UTC))
        except ModelError as exc:
            self._fail(str(exc))
        except Exception as exc:  # anything else is a bug, but still must not leave us "loading" forever
            log.exception("unexpected error while loading the model")
            self._fail(f"unexpected error while loading the model: {type(exc).__name__}: {exc}")
        else:
            self._loaded = loaded
            log.info("model ready: %s", resolved.describe())
        finally:
            self._settled.set()

    def load_in_background(self, resolve: Resolver, load_predictor: PredictorLoader) -> threading.Thread:
        """Start :meth:`load` in a daemon thread: a slow Hub download must not hold up shutdown."""
        self.loading_started = True
        thread = threading.Thread(
            target=self.load, args=(resolve, load_predictor), name="sentiment-model-loader", daemon=True
        )
        thread.start()
        return thread

    def _fail(self, reason: str) -> None:
        self._error = reason
        log.error("no model, the API will answer 503: %s", reason)
