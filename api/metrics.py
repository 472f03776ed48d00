"""Prometheus metrics of one app, in the app's own registry (so tests can build many apps)."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.model_state import ModelState
from schemas import LABELS, Label
from sentiment_model.operations import ModelOpsMetrics

#: Routes that score texts: the ``endpoint`` values of ``sentiment_predictions_total``.
PREDICT, PREDICT_BATCH = "/predict", "/predict/batch"

#: Label value for requests that matched no route: keeps the label set bounded whatever paths clients try.
UNMATCHED = "unmatched"

# Scoring takes tens of microseconds, a request a millisecond or so: resolve the low end finely.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _ModelCollector(Collector):
    """``sentiment_model_info`` and ``sentiment_model_ready``, read from the model state at scrape time."""

    def __init__(self, state: ModelState) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        loaded = self._state.loaded
        info = GaugeMetricFamily(
            "sentiment_model_info", "The loaded model (value 1)", labels=["repo", "revision", "sha256"]
        )
        if loaded is not None:
            info.add_metric([loaded.ref.repo, loaded.ref.revision or "", loaded.ref.sha256], 1.0)
        yield info
        yield GaugeMetricFamily(
            "sentiment_model_ready", "1 when a model is loaded and serving", value=float(loaded is not None)
        )


@dataclass(frozen=True, slots=True)
class _RequestSeries:
    requests: Counter
    latency: Histogram
    errors: Counter | None


class ApiMetrics:
    """The API's metrics; :meth:`render` gives the Prometheus text exposition."""

    def __init__(self, state: ModelState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sentiment_requests",
            "HTTP requests by route template, method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sentiment_request_latency_seconds",
            "Time from request to the end of the response, by route template",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "sentiment_request_errors",
            "HTTP requests answered 4xx or 5xx, by route template and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        # The seed's name, so dashboards built on it keep working. The worker exports the same name with a
        # ``brand`` label; ``endpoint`` (the scoring route) keeps the API's series apart from the worker's.
        self.predictions = Counter(
            "sentiment_predictions",
            "Texts scored for clients, by predicted label and scoring route",
            ["sentiment", "endpoint"],
            registry=self.registry,
        )
        self.registry.register(_ModelCollector(state))
        self.model_ops = ModelOpsMetrics(self.registry)  # hot reload and shadow: shared with the worker

        # Children looked up once per label set: ``.labels()`` takes a lock and builds a tuple every call,
        # a noticeable share of a cheap request.
        # Present from the start, so rate() sees the first prediction.
        self._predicted = {
            (endpoint, label): self.predictions.labels(label, endpoint)
            for endpoint in (PREDICT, PREDICT_BATCH)
            for label in LABELS
        }
        self._per_request: dict[tuple[str, str, int], _RequestSeries] = {}

    def count_predictions(self, labels: Iterable[Label]) -> None:
        """Add the texts one ``/predict/batch`` scored to ``sentiment_predictions_total``."""
        for label, count in Tally(labels).items():
            self._predicted[PREDICT_BATCH, label].inc(count)

    def count_prediction(self, label: Label) -> None:
        """Add the text one ``/predict`` scored to ``sentiment_predictions_total``."""
        self._predicted[PREDICT, label].inc()

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        key = (endpoint, method, status)
        series = self._per_request.get(key)
        if series is None:  # label sets are bounded (route templates x methods x statuses)
            series = self._per_request[key] = _RequestSeries(
                self.requests.labels(endpoint, method, str(status)),
                self.latency.labels(endpoint),
                self.errors.labels(endpoint, str(status)) if status >= 400 else None,
            )
        series.requests.inc()
        series.latency.observe(seconds)
        if series.errors is not None:
            series.errors.inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure-ASGI request counting and timing, labelled by route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's live route list, used when routing never ran (e.g. a 413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server sends when the app raises before responding

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            self.metrics.observe_request(
                self._template(scope), scope["method"], status, time.perf_counter() - started
            )

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        return next(_matching_templates(self.routes, scope), UNMATCHED)


def _matching_templates(routes: list[BaseRoute], scope: Scope) -> Iterator[str]:
    for route in routes:
        match, _ = route.matches(scope)
        path = getattr(route, "path", None)
        if match is not Match.NONE and isinstance(path, str):
            yield path
