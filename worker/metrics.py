"""Prometheus metrics of the worker, and the small HTTP server for /metrics and /healthz."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from schemas import LABELS, DeadLetterReason
from sentiment_model.operations import ModelOpsMetrics

OTHER_BRAND = "other"
_LABEL_INDEX: dict[str, int] = {label: i for i, label in enumerate(LABELS)}
OTHER_LANGUAGE = "other"
_ISO_639_1_CODES = """
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de
dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id
ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu
lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu
rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr
ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
"""
#: ISO 639-1 two-letter language codes: the bounded label set of ``sentiment_unsupported_language_posts``.
ISO_639_1 = frozenset(_ISO_639_1_CODES.split())
_BRAND_CACHE_SIZE = 10_000
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class WorkerMetrics:
    """Every metric the worker exports, in its own registry. Label sets are bounded by construction:
    labels, dead-letter reasons and configured brands (anything else is ``other``), partitions."""

    def __init__(self, brands: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.brands = frozenset(b.lower() for b in brands)
        r = self.registry
        self.predictions = Counter(
            "sentiment_predictions",
            "Posts scored, by predicted sentiment and brand",
            ["sentiment", "brand"],
            registry=r,
        )
        self.consumed = Counter("sentiment_records_consumed", "Input records consumed", registry=r)
        self.produced = Counter("sentiment_results_produced", "Result records produced", registry=r)
        self.dead_letters = Counter(
            "sentiment_dead_letters", "Input records sent to the dead-letter topic", ["reason"], registry=r
        )
        self.unsupported_language = Counter(
            "sentiment_unsupported_language_posts",
            "Valid posts not scored because their lang is not one the model scores, by primary language "
            "tag (ISO 639-1; anything else: other); they go to the dead-letter topic",
            ["lang"],
            registry=r,
        )
        self.batch_size = Histogram(
            "sentiment_batch_size_records", "Records per processed batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "sentiment_batch_processing_seconds",
            "Time to validate, score and produce one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.event_to_result = BatchHistogram(
            "sentiment_event_to_result_seconds",
            "From the post's created_at (else the record timestamp) to its result",
            _LATENCY_BUCKETS,
            r,
        )
        self.lag_records = Gauge(
            "sentiment_consumer_lag_records",
            "Records behind the partition end",
            ["topic", "partition"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "sentiment_consumer_lag_seconds",
            "Age of the last processed record while behind the partition end, else 0",
            ["topic", "partition"],
            registry=r,
        )
        self.last_processed = Gauge(
            "sentiment_last_processed_timestamp_seconds", "Unix time of the last processed batch", registry=r
        )
        self.commits = Counter("sentiment_checkpoints", "Checkpoints committed", registry=r)
        self.loop_heartbeat = Gauge(
            "sentiment_loop_heartbeat_timestamp_seconds",
            "Unix time the main loop last went round (moves when idle too: a frozen value is a stall)",
            registry=r,
        )
        self.broker_unreachable = Gauge(
            "sentiment_broker_unreachable_seconds",
            "How long the current checkpoint has waited for the broker to acknowledge its outputs "
            "(0: not waiting); input is paused meanwhile",
            registry=r,
        )
        self.outputs_unacknowledged = Gauge(
            "sentiment_outputs_unacknowledged_records",
            "Output records handed to the producer and not yet acknowledged by the broker",
            registry=r,
        )
        ProcessCollector(registry=r)  # process_* CPU, memory, start time: restarts and leaks show up
        self.model_info = Gauge(
            "sentiment_model_info",
            "The model that scores results (value is always 1)",
            ["repo", "revision", "sha256"],
            registry=r,
        )
        self.model_ops = ModelOpsMetrics(r)  # hot reload and shadow evaluation: shared with the API
        # Drift against the reference published in the model's metrics.json.
        self.drift_jsd = Gauge(
            "sentiment_label_drift_jsd",
            "Jensen-Shannon divergence (bits) of the live predicted-label mix vs the model's reference",
            registry=r,
        )
        self.drift_psi = Gauge(
            "sentiment_label_drift_psi",
            "Population stability index of the live label mix vs the reference",
            registry=r,
        )
        self.live_label_share = Gauge(
            "sentiment_live_label_share",
            "Predicted-label share over the drift window",
            ["sentiment"],
            registry=r,
        )
        self.reference_label_share = Gauge(
            "sentiment_reference_label_share",
            "Predicted-label share on val at training time",
            ["sentiment"],
            registry=r,
        )
        self.oov_rate = Gauge(
            "sentiment_oov_token_rate",
            "Share of live tokens outside the model vocabulary (drift window of DRIFT_MIN_RECORDS or more)",
            registry=r,
        )
        self.reference_oov_rate = Gauge(
            "sentiment_reference_oov_token_rate",
            "Share of val tokens outside the model vocabulary",
            registry=r,
        )
        self.drift_window = Gauge(
            "sentiment_drift_window_records",
            "Predictions in the drift window (gauges are noisy when low)",
            registry=r,
        )
        for reason in DeadLetterReason:
            self.dead_letters.labels(reason.value)
        #: Every brand label this worker exports: the configured brands, then ``other``; a post's brand
        #: is an index into this tuple.
        self.brand_names: tuple[str, ...] = (*sorted(self.brands), OTHER_BRAND)
        self._brand_index = {b: i for i, b in enumerate(self.brand_names)}
        self._brand_cache: dict[str | None, int] = {}
        # Children looked up once: .labels() costs a lock and a dict lookup per call.
        self._prediction_children = [
            [self.predictions.labels(label, brand) for label in LABELS] for brand in self.brand_names
        ]

    def brand_indices(self, brands: Sequence[str | None]) -> npt.NDArray[np.intp]:
        """Index into :attr:`brand_names` of each post's brand (a bounded cache of raw brand strings)."""
        cache = self._brand_cache
        out = np.empty(len(brands), np.intp)
        for i, brand in enumerate(brands):
            index = cache.get(brand)
            if index is None:
                index = self._brand_index[self.brand_label(brand)]
                if len(cache) < _BRAND_CACHE_SIZE:
                    cache[brand] = index
            out[i] = index
        return out

    def tally_predictions(
        self, brand_indices: npt.NDArray[np.intp], label_ids: npt.NDArray[np.intp]
    ) -> Tally[tuple[str, str]]:
        """One batch's predictions per (sentiment, brand label), counted with one bincount."""
        width = len(LABELS)
        counts = np.bincount(brand_indices * width + label_ids, minlength=len(self.brand_names) * width)
        tally: Tally[tuple[str, str]] = Tally()
        for cell in np.flatnonzero(counts).tolist():
            brand, label = divmod(cell, width)
            tally[(LABELS[label], self.brand_names[brand])] = int(counts[cell])
        return tally

    def count_predictions(self, tally: Tally[tuple[str, str]]) -> None:
        """Add a batch's tally to ``sentiment_predictions_total``: one increment per pair, not per post."""
        for (label, brand), n in tally.items():
            self._prediction_children[self._brand_index[brand]][_LABEL_INDEX[label]].inc(n)

    def brand_label(self, brand: str | None) -> str:
        """The bounded brand label of a post."""
        if brand is None:
            return OTHER_BRAND
        lowered = brand.lower()
        return lowered if lowered in self.brands else OTHER_BRAND

    @staticmethod
    def language_label(primary: str) -> str:
        """The bounded ``lang`` label: an ISO 639-1 code, else ``other``."""
        return primary if primary in ISO_639_1 else OTHER_LANGUAGE

    def set_model(self, repo: str, revision: str | None, sha256: str) -> None:
        """Expose the identity of the loaded model (only one series at a time)."""
        self.model_info.clear()
        self.model_info.labels(repo, revision or "", sha256).set(1)

    def forget_partitions(self, topic: str, partitions: Iterable[int]) -> None:
        """Drop lag series of partitions this worker no longer owns (another member reports them)."""
        for partition in partitions:
            for gauge in (self.lag_records, self.lag_seconds):
                with contextlib.suppress(KeyError):  # never reported for this partition
                    gauge.remove(topic, str(partition))

    def exposition(self) -> bytes:
        """Prometheus text format."""
        return generate_latest(self.registry)


def _go_float(value: float) -> str:
    """A bucket bound as Prometheus clients write it (``0.005``, ``1.0``, ``+Inf``)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


class BatchHistogram(Collector):
    """A histogram observed a batch at a time: numpy counts the buckets, one lock per batch.

    prometheus_client's Histogram takes one value per call (a lock and a bucket search in Python each);
    per post that was a measurable share of the hot path. Exposed exactly like a Histogram.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.asarray(buckets, np.float64)
        self._counts = np.zeros(len(buckets) + 1, np.int64)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        """Add a batch of observations."""
        if not len(values):
            return
        # side="left": a value equal to a bound falls into that bound's bucket (Prometheus buckets are <=).
        counts = np.bincount(np.searchsorted(self._bounds, values, side="left"), minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> Iterator[Metric]:
        """The histogram in Prometheus form (cumulative buckets, count, sum)."""
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [(_go_float(b), c) for b, c in zip(self._bounds.tolist(), cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class Heartbeat:
    """The main loop beats; /healthz answers 503 when it has not for ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._last = time.monotonic()

    def beat(self) -> None:
        """Called once per loop iteration."""
        self._last = time.monotonic()

    def alive(self) -> bool:
        """Whether the loop beat recently."""
        return time.monotonic() - self._last < self.timeout


class Exposition(Protocol):
    """Anything with a registry to expose (the worker's metrics, the reputation stage's)."""

    def exposition(self) -> bytes: ...


class MetricsServer:
    """``GET /metrics`` (Prometheus) and ``GET /healthz`` (liveness) on a daemon thread."""

    def __init__(self, metrics: Exposition, heartbeat: Heartbeat, host: str, port: int) -> None:
        metrics_, heartbeat_ = metrics, heartbeat

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._send(200, metrics_.exposition(), CONTENT_TYPE_LATEST)
                elif self.path.split("?")[0] in ("/healthz", "/health"):
                    ok = heartbeat_.alive()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"main loop stalled\n", "text/plain")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # shutdown() waits for the serving loop's next poll, and every worker's exit counts against
        # SHUTDOWN_TIMEOUT_SECONDS: poll often.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="metrics-http",
            daemon=True,
        )

    def start(self) -> MetricsServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
