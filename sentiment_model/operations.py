"""Model operations: hot reload with shadow evaluation, one protocol for the worker and the API.

1. A :class:`~sentiment_model.watch.ModelWatcher` polls the model source every
   ``MODEL_POLL_INTERVAL_SECONDS`` on its own thread and loads a newer file as the candidate.
2. The candidate goes into shadow at once (on the watcher thread). From then on every batch the serving
   loop reports to :meth:`ModelOperations.after_batch` (normalized texts, the current model's labels) is
   scored by the candidate too, unseen.
3. After ``SHADOW_RECORDS`` texts, :class:`~sentiment_model.shadow.ShadowEvaluation` gives its verdict.
4. Promoted: the serving process's ``promote`` callback swaps models, on the thread that called
   :meth:`~ModelOperations.after_batch`, so the swap falls between two batches (worker) or model calls
   (API). Rejected, by the verdict or because the candidate failed while scoring: logged at WARNING,
   never tried again. Clients and output topics only ever see the current model's answers.

The metrics of the protocol are :class:`ModelOpsMetrics`, defined here once and registered by each
process in its own registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge

from schemas.model_info import ShadowCandidate
from sentiment_model.predictor import Predictor
from sentiment_model.resolve import ResolvedModel
from sentiment_model.settings import ModelSettings
from sentiment_model.shadow import ShadowEvaluation
from sentiment_model.watch import ModelWatcher

log = logging.getLogger(__name__)

#: ``outcome`` values of ``sentiment_model_reloads_total`` (what :class:`ModelWatcher` reports): a new
#: model loaded and went into shadow, was promoted, was rejected in shadow, failed to load.
RELOAD_OUTCOMES = ("candidate", "promoted", "rejected", "failed")

Promote = Callable[[Predictor, ResolvedModel], None]
"""Makes the process serve ``predictor`` (loaded from ``model``) from its next batch on."""


class ModelOpsMetrics:
    """Hot-reload and shadow metrics: same names and meaning in the worker and the API."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter(
            "sentiment_model_reloads",
            "New models found: candidate (in shadow), promoted, rejected in shadow, failed to load",
            ["outcome"],
            registry=registry,
        )
        self._outcomes = {outcome: self.reloads.labels(outcome) for outcome in RELOAD_OUTCOMES}

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, registry=registry)

        self.shadow_records = gauge(
            "sentiment_shadow_records", "Texts the current candidate scored in shadow (0: none)"
        )
        self.shadow_agreement = gauge(
            "sentiment_shadow_agreement_ratio",
            "Share of shadow texts where candidate and current model agree (last evaluation)",
        )
        self.shadow_jsd = gauge(
            "sentiment_shadow_label_jsd",
            "Jensen-Shannon divergence (bits) of candidate vs current label distribution (last evaluation)",
        )

    def count(self, outcome: str) -> None:
        """Add one to ``sentiment_model_reloads_total{outcome}`` (one of :data:`RELOAD_OUTCOMES`)."""
        self._outcomes[outcome].inc()


class ModelOperations:
    """Hot reload for one serving period: :meth:`start`, then :meth:`after_batch` per batch, :meth:`stop`.

    ``scored_by`` names the serving unit in the log: "batch" (worker) or "model call" (API).
    """

    def __init__(
        self, settings: ModelSettings, metrics: ModelOpsMetrics, promote: Promote, *, scored_by: str
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._promote = promote
        self._scored_by = scored_by
        self._policy = settings.shadow_policy
        self._lock = threading.Lock()  # guards the fields below (watcher and serving threads)
        self._watcher: ModelWatcher | None = None
        self._evaluation: ShadowEvaluation | None = None
        self._current: ResolvedModel | None = None
        self._stopped = False

    @staticmethod
    def enabled(settings: ModelSettings) -> bool:
        """Off when ``MODEL_POLL_INTERVAL_SECONDS`` is 0 or ``MODEL_REVISION`` pins a revision (logged)."""
        on = ModelWatcher.enabled(settings, settings.model_poll_interval_seconds)
        if not on:
            log.info("hot-reload off (MODEL_REVISION pinned or MODEL_POLL_INTERVAL_SECONDS=0)")
        return on

    @property
    def watching(self) -> bool:
        """Whether the watcher runs."""
        return self._watcher is not None

    @property
    def shadowing(self) -> bool:
        """Whether a candidate is in shadow: only then does :meth:`after_batch` need the texts."""
        return self._evaluation is not None

    def start(self, current: ResolvedModel) -> None:
        """Start looking for models newer than ``current`` (nothing once :meth:`stop` was called)."""
        interval = self._settings.model_poll_interval_seconds
        with self._lock:
            if self._stopped or self._watcher is not None:
                return
            self._current = current
            self._watcher = ModelWatcher(self._settings, current, interval, self._outcome)
            self._watcher.start()
        log.info("hot-reload on: looking for a newer model every %gs", interval)

    def stop(self) -> None:
        """Stop watching and drop a candidate still in shadow."""
        with self._lock:
            self._stopped = True
            watcher, self._watcher = self._watcher, None
            evaluation, self._evaluation = self._evaluation, None
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

    def after_batch(self, lines: list[str], current_ids: npt.NDArray[np.intp]) -> None:
        """Score a batch the current model just scored (normalized ``lines``, its label ids) with the
        candidate in shadow, if any; decide once enough texts are seen. Never raises for the candidate."""
        evaluation = self._evaluation
        if evaluation is None or not lines:
            return
        try:
            evaluation.observe(lines, current_ids)
        except Exception as exc:  # the batch is already scored; the candidate is what failed
            log.exception("candidate %s failed scoring in shadow", evaluation.model.describe())
            self._decide(evaluation, failure=f"scoring in shadow failed: {type(exc).__name__}: {exc}")
            return
        self._metrics.shadow_records.set(evaluation.records)
        if evaluation.done:
            self._decide(evaluation)

    def _outcome(self, outcome: str) -> None:
        """The watcher's hook: count every outcome; put a new candidate into shadow.

        Runs on the watcher thread ("candidate", "failed") or the serving one ("promoted", "rejected"), and
        must not raise: that would end the watcher's thread.
        """
        try:
            self._metrics.count(outcome)
            if outcome == "candidate":
                self._begin_shadow()
        except Exception:
            log.exception("hot-reload: handling outcome %r failed", outcome)

    def _begin_shadow(self) -> None:
        with self._lock:
            watcher = self._watcher
            if self._stopped or watcher is None or self._evaluation is not None:
                return
            pending = watcher.take()
            if pending is None:
                return
            predictor, model = pending
            self._evaluation = ShadowEvaluation(predictor, model, self._policy)
            self._metrics.shadow_records.set(0)
        log.info(
            "candidate %s: scoring the next %d live texts with it in shadow",
            model.describe(),
            self._policy.records,
        )

    def _decide(self, evaluation: ShadowEvaluation, failure: str | None = None) -> None:
        verdict = evaluation.verdict()
        promote = failure is None and verdict.promote
        with self._lock:
            watcher, current = self._watcher, self._current
            if self._evaluation is not evaluation or watcher is None:
                return  # stopped meanwhile
            self._evaluation = None
            if promote:
                self._promote(evaluation.candidate, evaluation.model)
                self._current = evaluation.model
        self._metrics.shadow_records.set(0)
        if failure is None:
            self._metrics.shadow_agreement.set(verdict.agreement)
            self._metrics.shadow_jsd.set(verdict.label_jsd)
        if promote:
            log.info(
                "promoting %s after %d texts in shadow (%s); it scores from the next %s on",
                evaluation.model.describe(),
                verdict.records,
                verdict.reason,
                self._scored_by,
            )
            watcher.promoted(evaluation.model)
        else:
            log.warning(
                "candidate %s rejected after %d texts in shadow: %s; keeping %s",
                evaluation.model.describe(),
                evaluation.records,
                failure or verdict.reason,
                current.describe() if current is not None else "the current model",
            )
            watcher.rejected(evaluation.model)
