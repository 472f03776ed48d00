"""Hot reload for the API: a watcher finds newer models, live traffic evaluates them in shadow.

:class:`sentiment_model.watch.ModelWatcher` polls the model source every
``MODEL_POLL_INTERVAL_SECONDS`` on its own thread and loads a newer file as the candidate. The candidate
then scores, unseen, the live texts of the next model calls (:meth:`api.model_state.ModelState.score`
hands them over already normalized, with the current model's labels) until ``SHADOW_RECORDS`` texts;
:class:`sentiment_model.shadow.ShadowEvaluation` then decides: promoted (the next model call is scored by
it, and everything that names the model names it) or rejected (logged at WARNING, never tried again).
Clients always get the current model's answer.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import numpy.typing as npt

from api.metrics import ApiMetrics
from api.model_state import LoadedModel, ModelState
from schemas.model_info import ShadowCandidate
from sentiment_model.settings import ModelSettings
from sentiment_model.shadow import ShadowEvaluation
from sentiment_model.watch import ModelWatcher

log = logging.getLogger(__name__)


class ModelReloader:
    """Hot reload for one serving period (the app's lifespan): :meth:`start`, then :meth:`stop`."""

    def __init__(self, state: ModelState, settings: ModelSettings, metrics: ApiMetrics) -> None:
        self._state = state
        self._settings = settings
        self._metrics = metrics
        self._policy = settings.shadow_policy
        self._lock = threading.Lock()  # guards the fields below (watcher, loader and scoring threads)
        self._watcher: ModelWatcher | None = None
        self._evaluation: ShadowEvaluation | None = None
        self._stopped = False

    @staticmethod
    def enabled(settings: ModelSettings) -> bool:
        """Off when ``MODEL_POLL_INTERVAL_SECONDS`` is 0 or ``MODEL_REVISION`` pins a revision."""
        return ModelWatcher.enabled(settings, settings.model_poll_interval_seconds)

    @property
    def watching(self) -> bool:
        """Whether the watcher runs (it starts once the first model has loaded)."""
        return self._watcher is not None

    def start(self) -> None:
        """Start watching once the model has loaded (never, if it fails to load)."""
        self._state.when_loaded(self._watch)

    def stop(self) -> None:
        """Stop watching and drop a candidate still in shadow."""
        with self._lock:
            self._stopped = True
            watcher, self._watcher = self._watcher, None
            evaluation, self._evaluation = self._evaluation, None
            if self._state.shadow == self._observe:
                self._state.shadow = None
        if watcher is not None:
            watcher.stop()
        if evaluation is not None:
            self._metrics.shadow_records.set(0)
            log.info("shutting down: dropping candidate %s, still in shadow", evaluation.model.describe())

    def candidate(self) -> ShadowCandidate | None:
        """The model in shadow now, with its progress; None when there is none."""
        evaluation = self._evaluation
        if evaluation is None:
            return None
        return ShadowCandidate(
            **evaluation.model.file.model_dump(),
            records=min(evaluation.records, self._policy.records),
            records_needed=self._policy.records,
        )

    def _watch(self, loaded: LoadedModel) -> None:
        """Called once the first model has loaded (loader thread)."""
        interval = self._settings.model_poll_interval_seconds
        with self._lock:
            if self._stopped:
                return
            self._watcher = ModelWatcher(self._settings, loaded.resolved, interval, self._outcome)
            self._watcher.start()
        log.info("hot reload on: looking for a newer model every %gs", interval)

    def _outcome(self, outcome: str) -> None:
        """The watcher's hook: count every outcome; put a new candidate into shadow.

        Runs on the watcher thread ("candidate", "failed") or the scoring one ("promoted", "rejected"), and
        must not raise: that would end the watcher's thread.
        """
        try:
            self._metrics.count_reload(outcome)
            if outcome == "candidate":
                self._begin_shadow()
        except Exception:
            log.exception("hot reload: handling outcome %r failed", outcome)

    def _begin_shadow(self) -> None:
        with self._lock:
            watcher = self._watcher
            if self._stopped or watcher is None or self._evaluation is not None:
                return
            pending = watcher.take()
            if pending is None:
                return
            predictor, model = pending
            evaluation = ShadowEvaluation(predictor, model, self._policy)
            self._evaluation = evaluation
            self._metrics.shadow_records.set(0)
            self._state.shadow = self._observe
        log.info(
            "candidate %s: scoring the next %d live texts with it in shadow",
            model.describe(),
            self._policy.records,
        )

    def _observe(self, lines: list[str], current_ids: npt.NDArray[np.intp]) -> None:
        """The shadow hook (scoring thread): score with the candidate too, decide once enough is seen."""
        evaluation = self._evaluation
        if evaluation is None:
            return
        try:
            evaluation.observe(lines, current_ids)
        except Exception as exc:  # the client's answer is already scored; the candidate is what failed
            log.exception("candidate %s failed scoring in shadow", evaluation.model.describe())
            self._decide(evaluation, failure=f"scoring in shadow failed: {type(exc).__name__}: {exc}")
            return
        self._metrics.shadow_records.set(evaluation.records)
        if evaluation.done:
            self._decide(evaluation)

    def _decide(self, evaluation: ShadowEvaluation, failure: str | None = None) -> None:
        verdict = evaluation.verdict()
        promote = failure is None and verdict.promote
        with self._lock:
            watcher = self._watcher
            if self._evaluation is not evaluation or watcher is None:
                return  # stopped meanwhile
            self._evaluation = None
            self._state.shadow = None
            current = self._state.loaded
            if promote:
                self._state.promote(evaluation.candidate, evaluation.model)
        self._metrics.shadow_records.set(0)
        if failure is None:
            self._metrics.shadow_agreement.set(verdict.agreement)
            self._metrics.shadow_jsd.set(verdict.label_jsd)
        if promote:
            log.info(
                "promoted %s after %d texts in shadow (%s); it scores from the next model call on",
                evaluation.model.describe(),
                verdict.records,
                verdict.reason,
            )
            watcher.promoted(evaluation.model)
        else:
            log.warning(
                "candidate %s rejected after %d texts in shadow: %s; keeping %s",
                evaluation.model.describe(),
                evaluation.records,
                failure or verdict.reason,
                current.resolved.describe() if current is not None else "the current model",
            )
            watcher.rejected(evaluation.model)
