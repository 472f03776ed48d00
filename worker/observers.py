"""What the worker does with a batch besides producing its results: the observers.

The loop (:meth:`worker.app.Worker.process`) runs each batch through the pipeline (decode, route
languages, normalise, score, encode, produce), has the checkpoint track its offsets, then hands one
:class:`BatchView` to each observer, by name and in this order:

1. :class:`PartialAggregates`: the batch's partial aggregates for the reputation stage, produced inside
   the open checkpoint (one transaction with the results under exactly-once);
2. :class:`BatchMetrics`: counters and histograms, once per batch (never per record);
3. :class:`DriftObserver`: the drift window (:mod:`worker.drift`, pure) and the gauges it reads;
4. :class:`ModelOpsObserver`: the candidate model's shadow evaluation, last because it may promote the
   candidate (from the next batch on: a batch is scored by one model only).

An observer reads the batch and never changes it. The domain logic behind each (:mod:`worker.partials`,
:mod:`worker.drift`, :mod:`sentiment_model.operations`) knows nothing of Prometheus or of the loop.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from schemas import LABELS
from sentiment_model import Predictor
from sentiment_model.operations import ModelOperations
from worker.batch import Decoded, last_per_partition
from worker.drift import DriftMonitor, OovCounter
from worker.kafka import Producer
from worker.metrics import WorkerMetrics
from worker.partials import Partials


@dataclass(frozen=True, slots=True)
class BatchView:
    """One processed batch as columns.

    ``records`` and ``partitions`` have a row per consumed record; ``lines``, ``label_ids``,
    ``brand_ids`` and ``event_times`` a row per valid post, post j being record ``decoded.index[j]``.
    """

    records: Sequence[Any]
    partitions: list[int]
    decoded: Decoded
    unsupported_languages: list[str]  # the primary language of each post routed away for it
    lines: list[str]  # normalised texts
    label_ids: npt.NDArray[np.intp]  # :data:`schemas.LABELS` order
    brand_ids: npt.NDArray[np.intp]  # index into :attr:`WorkerMetrics.brand_names`
    event_times: npt.NDArray[np.float64]  # unix seconds: created_at, else the record timestamp
    predictor: Predictor  # the model that scored the batch
    processed_at: float  # unix seconds, as stamped on the results
    started: float  # time.perf_counter() when the batch came in


class BatchObserver(Protocol):
    """Takes each processed batch, after its results are produced and its offsets tracked."""

    def observe(self, batch: BatchView) -> None: ...


class PartialAggregates:
    """:class:`worker.partials.Partials` fed and drained once per batch, its records produced to
    ``topic`` (None: off) inside the batch's checkpoint.

    Terms: the words that pulled the batch's negative and positive posts their way, per brand window.
    Contributions come from the scorer itself (the exact identity of ``"explain": true``); a model that
    only fastText can score (char n-grams) has no such table, and its words' pulls are read through
    fastText's word vectors instead (:mod:`sentiment_model.fasttext_scorer`, an approximation of the
    log-odds). Only the posts that may be in their window's sample are explained (worker/partials.py).
    """

    def __init__(self, partials: Partials, producer: Producer) -> None:
        self.partials = partials
        self.producer = producer
        self.topic: str | None = None  # decided when the worker starts

    def observe(self, batch: BatchView) -> None:
        if self.topic is None or not batch.lines:
            return
        partials = self.partials
        starts = partials.window_starts(batch.event_times)
        partitions = np.asarray(batch.partitions, np.int64)[batch.decoded.index]
        partials.observe(batch.brand_ids, batch.label_ids, starts, batch.event_times, partitions)
        if partials.top_terms:
            self._observe_terms(batch, starts)
        for key, value, partition in partials.drain():
            self.producer.produce(self.topic, value, key, partition=partition)

    def _observe_terms(self, batch: BatchView, starts: npt.NDArray[np.int64]) -> None:
        ids: list[str] = batch.decoded.column("id")
        chosen = self.partials.sample(batch.brand_ids, batch.label_ids, starts, ids)
        if not chosen.size:
            return
        pulls = batch.predictor.word_pulls([batch.lines[i] for i in chosen.tolist()])
        documents = batch.decoded.documents
        self.partials.observe_terms(
            batch.brand_ids[chosen],
            batch.label_ids[chosen],
            starts[chosen],
            pulls,
            ids=[ids[i] for i in chosen.tolist()],
            texts=[documents[i]["text"] for i in chosen.tolist()],
        )

    def declare_idle(
        self, caught_up: Callable[[], Mapping[int, bool]], timeout: float, begin: Callable[[], None]
    ) -> None:
        """Input partitions caught up and quiet for ``timeout`` seconds stop holding the stage's windows
        open (:meth:`worker.partials.Partials.idle`); ``begin`` opens the checkpoint they go into."""
        if self.topic is None:
            return
        records = self.partials.idle(caught_up, time.monotonic(), timeout)
        if records:
            begin()
        for key, value, partition in records:
            self.producer.produce(self.topic, value, key, partition=partition)


class BatchMetrics:
    """A batch's counters and histograms, all at once (a scrape sees a batch whole or not at all, as far
    as its counters go); also what the loop's lag gauges and stats log read."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self.last_record_time: dict[int, float] = {}  # partition -> timestamp of its last record
        self.stats = Counter[str]()  # for the periodic log line; the loop clears it

    def observe(self, batch: BatchView) -> None:
        m = self.metrics
        if len(batch.label_ids):
            m.count_predictions(m.tally_predictions(batch.brand_ids, batch.label_ids))
        consumed = len(batch.records)
        m.consumed.inc(consumed)
        m.batch_size.observe(consumed)
        m.batch_seconds.observe(time.perf_counter() - batch.started)
        m.last_processed.set(batch.processed_at)
        rejected = batch.decoded.rejected
        for reason, n in Counter(dead.reason.value for dead in rejected).items():
            m.dead_letters.labels(reason).inc(n)
        for language, n in Counter(batch.unsupported_languages).items():
            m.unsupported_language.labels(m.language_label(language)).inc(n)
        valid = len(batch.decoded.documents)
        if valid:
            m.produced.inc(valid)
            m.event_to_result.observe_many(np.maximum(batch.processed_at - batch.event_times, 0.0))
        for partition, i in last_per_partition(batch.partitions).items():
            self.last_record_time[partition] = batch.records[i].timestamp()[1] / 1000
        self.stats["consumed"] += consumed
        self.stats["results"] += valid
        self.stats["dead_letters"] += len(rejected)


class DriftObserver:
    """The drift window of :class:`worker.drift.DriftMonitor`, and the gauges set from what it returns."""

    def __init__(self, monitor: DriftMonitor, metrics: WorkerMetrics) -> None:
        self.monitor = monitor
        self.metrics = metrics

    def set_model(self, reference: dict[str, Any] | None, oov_counts: OovCounter) -> None:
        """A (new) model and its reference (metrics.json): the window restarts."""
        m = self.metrics
        known = self.monitor.set_model(reference, oov_counts)
        m.reference_label_share.clear()
        for label, share in zip(LABELS, known.label_shares or (), strict=False):
            m.reference_label_share.labels(label).set(share)
        m.reference_oov_rate.set(known.oov_rate)

    def observe(self, batch: BatchView) -> None:
        if not batch.lines:
            return
        m = self.metrics
        reading = self.monitor.observe(batch.label_ids, batch.lines)
        m.drift_window.set(reading.records)
        for label, share in zip(LABELS, reading.label_shares, strict=True):
            m.live_label_share.labels(label).set(share)
        if reading.oov_rate is not None:
            m.oov_rate.set(reading.oov_rate)
        if reading.jsd is not None and reading.psi is not None:
            m.drift_jsd.set(reading.jsd)
            m.drift_psi.set(reading.psi)


class ModelOpsObserver:
    """Hands each scored batch to :meth:`ModelOperations.after_batch` (shadow evaluation; may promote)."""

    def __init__(self, operations: ModelOperations) -> None:
        self.operations = operations

    def observe(self, batch: BatchView) -> None:
        self.operations.after_batch(batch.lines, batch.label_ids)
