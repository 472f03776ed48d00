"""Prometheus metrics of the worker, and the small HTTP server for /metrics and /healthz."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from schemas import LABELS, DeadLetterReason

OTHER_BRAND = "other"
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
        self.batch_size = Histogram(
            "sentiment_batch_size_records", "Records per processed batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "sentiment_batch_processing_seconds",
            "Time to validate, score and produce one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.event_to_result = Histogram(
            "sentiment_event_to_result_seconds",
            "From the post's created_at (else the record timestamp) to its result",
            buckets=_LATENCY_BUCKETS,
            registry=r,
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
        # Hot-reload and shadow evaluation (same names and meaning as the API's).
        self.reloads = Counter(
            "sentiment_model_reloads",
            "New models found: candidate (in shadow), promoted, rejected in shadow, failed to load",
            ["outcome"],
            registry=r,
        )
        self.shadow_records = Gauge(
            "sentiment_shadow_records", "Texts the current candidate scored in shadow (0: none)", registry=r
        )
        self.shadow_agreement = Gauge(
            "sentiment_shadow_agreement_ratio",
            "Share of shadow texts where candidate and current model agree (last evaluation)",
            registry=r,
        )
        self.shadow_jsd = Gauge(
            "sentiment_shadow_label_jsd",
            "Jensen-Shannon divergence (bits) of candidate vs current label distribution (last evaluation)",
            registry=r,
        )
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
            "Share of live tokens outside the model vocabulary (drift window)",
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
        # Per-brand reputation over sliding windows (this worker's share of the traffic).
        self.brand_posts = Gauge(
            "sentiment_brand_window_posts",
            "Posts scored in the last `window` seconds by this worker, by brand and sentiment",
            ["brand", "window", "sentiment"],
            registry=r,
        )
        self.brand_net = Gauge(
            "sentiment_brand_net_sentiment",
            "(positive - negative) / total over the last `window` seconds on this worker, by brand",
            ["brand", "window"],
            registry=r,
        )
        self.reputation_records = Counter(
            "sentiment_reputation_records", "Windowed per-brand aggregates produced", registry=r
        )
        for outcome in ("candidate", "promoted", "rejected", "failed"):
            self.reloads.labels(outcome)
        for reason in DeadLetterReason:
            self.dead_letters.labels(reason.value)
        for label in LABELS:
            for brand in (*sorted(self.brands), OTHER_BRAND):
                self.predictions.labels(label, brand)

    def brand_label(self, brand: str | None) -> str:
        """The bounded brand label of a post."""
        if brand is None:
            return OTHER_BRAND
        lowered = brand.lower()
        return lowered if lowered in self.brands else OTHER_BRAND

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


class MetricsServer:
    """``GET /metrics`` (Prometheus) and ``GET /healthz`` (liveness) on a daemon thread."""

    def __init__(self, metrics: WorkerMetrics, heartbeat: Heartbeat, host: str, port: int) -> None:
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
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
