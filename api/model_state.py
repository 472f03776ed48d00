"""The process's model: resolved and loaded once, in a background thread, so serving starts at once.

Until the load settles, and forever if it fails, requests that need the model get a 503 carrying
:attr:`ModelState.reason`; nothing ever answers with a made-up label.

With hot reload (:mod:`sentiment_model.operations`) the model can later be replaced by a promoted
candidate: one reference swap, so every model call, and the response that names its model, sees one
model or the other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from schemas import ModelRef
from sentiment_model import ModelError, Predictor, ResolvedModel, ScoredBatch, normalize_batch
from sentiment_model.operations import ModelOperations

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
    """Holds the loaded model, or the reason there is none.

    Written by the loader thread, then only by :meth:`promote` (hot reload).
    """

    def __init__(self) -> None:
        self._loaded: LoadedModel | None = None
        self._error: str | None = None
        self._settled = threading.Event()
        self._lock = threading.Lock()
        self._on_loaded: list[Callable[[LoadedModel], None]] = []
        self.loading_started = False
        self.operations: ModelOperations | None = None
        """Hot reload, when on: while a candidate is in shadow, :meth:`score` feeds it every live text."""

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

    def score(self, texts: list[str], live: int) -> tuple[ScoredBatch, LoadedModel]:
        """Score ``texts`` with the current model, in one call; returns the scores and that model.

        While a candidate is in shadow, the first ``live`` texts (client texts, not probes) also go to
        :attr:`operations`, normalized once for both models. That may promote the candidate: the
        next call is then scored by it, this one never is. Blocking (a thread or, for small calls, the
        event loop: see :mod:`api.batcher`).
        """
        loaded = self.require()
        operations = self.operations
        if operations is None or live == 0 or not operations.shadowing:
            return loaded.predictor.predict(texts), loaded
        lines = normalize_batch(texts)
        batch = loaded.predictor.predict_normalized(lines)
        operations.after_batch(lines[:live], batch.label_ids[:live])
        return batch, loaded

    def promote(self, predictor: Predictor, resolved: ResolvedModel) -> None:
        """Serve ``predictor`` from now on (the hot-reload swap: one reference assignment)."""
        self._loaded = LoadedModel(predictor, resolved, datetime.now(UTC))

    def when_loaded(self, callback: Callable[[LoadedModel], None]) -> None:
        """Call ``callback(model)`` once a model is loaded: now if it is, else from the loader thread.

        Never called when loading fails.
        """
        with self._lock:
            loaded = self._loaded
            if loaded is None:
                if not self._settled.is_set():
                    self._on_loaded.append(callback)
                return
        callback(loaded)

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
            with self._lock:
                self._loaded = loaded
                callbacks, self._on_loaded = self._on_loaded, []
            log.info("model ready: %s", resolved.describe())
            for callback in callbacks:
                try:
                    callback(loaded)
                except Exception:  # a callback's bug must not un-ready a model that loaded fine
                    log.exception("callback after the model load failed")
        finally:
            with self._lock:
                self._on_loaded = []
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
