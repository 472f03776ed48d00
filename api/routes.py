"""The endpoints: scoring (optionally behind the API key), operations and brands (always open)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.auth import require_api_key
from api.bodies import Health, Problem, Ready, Unavailable, ValidationProblem
from api.brand_routes import add_brand_routes
from api.context import api_context
from api.direct_route import DirectRoute
from api.errors import unavailable
from api.explain import CANNOT_EXPLAIN_STATUS, cannot_explain, explain
from api.json_io import json_response, read_json, request_body_openapi
from api.settings import ApiSettings
from schemas import LABELS, Label, ModelInfo
from schemas.api import (
    BatchPrediction,
    BatchPredictRequest,
    BatchPredictResponse,
    ExplainedBatchPrediction,
    ExplainedBatchPredictResponse,
    ExplainedPredictResponse,
    PredictRequest,
    PredictResponse,
)
from schemas.sentiment import LabelScores
from sentiment_model import ModelCannotExplainError, ScoredBatch
from sentiment_model.predictor import PROBE_TEXT

#: ``GET /ready`` scores :data:`PROBE_TEXT` to prove the whole scoring path works, not just that a file
#: was loaded; this long at most.
READY_PROBE_TIMEOUT_SECONDS = 5.0

_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Unavailable, "description": "No usable model (still loading, or loading failed)"}
}
_SCORING_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "Request body over MAX_BODY_BYTES"},
    422: {"model": ValidationProblem, "description": "Invalid body; `detail` says what is wrong"},
    **_NOT_READY,
}
_CANNOT_EXPLAIN: dict[int | str, dict[str, Any]] = {
    CANNOT_EXPLAIN_STATUS: {"model": Problem, "description": '`"explain": true` but the model cannot explain'}
}
_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong API key"}
}


async def predict(request: Request) -> Response:
    """Score one text."""
    api = api_context(request)
    body = await read_json(request, PredictRequest)
    api.model.require()  # a 503 with the reason before queueing, when there is no model
    batch, model = await api.scorer().score([body.text])  # the model that scored it (hot reload)
    label, score, scores = _rows(batch)[0]
    api.metrics.count_prediction(label)
    if body.explain:
        try:
            (explanation,) = await asyncio.to_thread(explain, model.predictor, [body.text], [label])
        except ModelCannotExplainError as exc:
            return cannot_explain(exc)
        return json_response(
            ExplainedPredictResponse(
                label=label, score=score, scores=scores, model=model.ref, explanation=explanation
            )
        )
    return json_response(PredictResponse(label=label, score=score, scores=scores, model=model.ref))


async def predict_batch(request: Request) -> Response:
    """Score up to ``MAX_BATCH_TEXTS`` texts in one model call; results come in request order."""
    api = api_context(request)
    body = await read_json(request, BatchPredictRequest)
    api.model.require()
    batch, model = await api.scorer().score(body.texts)
    rows = _rows(batch)
    api.metrics.count_predictions(label for label, _, _ in rows)
    if body.explain:
        labels = [label for label, _, _ in rows]
        try:
            explanations = await asyncio.to_thread(explain, model.predictor, body.texts, labels)
        except ModelCannotExplainError as exc:
            return cannot_explain(exc)
        explained = [
            ExplainedBatchPrediction(label=label, score=score, scores=scores, explanation=explanation)
            for (label, score, scores), explanation in zip(rows, explanations, strict=True)
        ]
        return json_response(ExplainedBatchPredictResponse(model=model.ref, results=explained))
    results = [BatchPrediction(label=label, score=score, scores=scores) for label, score, scores in rows]
    return json_response(BatchPredictResponse(model=model.ref, results=results))


def _rows(batch: ScoredBatch) -> list[tuple[Label, float, LabelScores]]:
    """(label, score, all scores) per text; plain Python, as numpy's per-call overhead dominates here."""
    rows = []
    for probabilities in batch.probabilities.tolist():
        best = max(range(len(LABELS)), key=probabilities.__getitem__)
        scores = LabelScores(**dict(zip(LABELS, probabilities, strict=True)))
        rows.append((LABELS[best], probabilities[best], scores))
    return rows


async def health() -> Health:
    """Liveness: 200 whenever the process serves HTTP, model or not."""
    return Health()


async def ready(request: Request) -> Ready | JSONResponse:
    """Readiness: 200 only when a model is loaded and scores a probe text; else 503 with the reason."""
    api = api_context(request)
    if api.model.loaded is None or api.batcher is None:
        return unavailable(api.model.status, api.model.reason or "the API has not finished starting")
    try:  # not live traffic: a candidate in shadow never sees the probe
        _, model = await asyncio.wait_for(
            api.batcher.score([PROBE_TEXT], live=False), READY_PROBE_TIMEOUT_SECONDS
        )
    except TimeoutError:
        return unavailable("failing", f"a probe prediction took over {READY_PROBE_TIMEOUT_SECONDS:g}s")
    except Exception as exc:
        return unavailable("failing", f"the model is loaded but a probe prediction failed: {exc}")
    return Ready(model=model.ref)


async def model_info(request: Request) -> ModelInfo:
    """The loaded model: identity, labels, load time, its published training metrics, and the newer model
    in shadow evaluation, if any."""
    api = api_context(request)
    model = api.model.require()
    return ModelInfo(
        **model.resolved.file.model_dump(),
        loaded_at=model.loaded_at,
        metrics=model.resolved.metrics,
        candidate=api.reloader.candidate() if api.reloader is not None else None,
    )


async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(api_context(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


def add_routes(router: APIRouter, settings: ApiSettings) -> None:
    """Add every route to ``router`` (the app's own, so its route list stays flat for the metrics).

    The scoring routes require the API key when ``API_KEY`` is set (the dependency enforces it; a
    :class:`DirectRoute` runs it before the endpoint).
    """
    guard = [Depends(require_api_key)] if settings.api_key is not None else []
    scoring_errors = {**_SCORING_ERRORS, **_CANNOT_EXPLAIN, **(_UNAUTHORIZED if guard else {})}
    router.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        tags=["scoring"],
        route_class_override=DirectRoute,
        dependencies=guard,
        response_model=PredictResponse | ExplainedPredictResponse,
        responses=scoring_errors,
        openapi_extra=request_body_openapi(PredictRequest),
    )
    router.add_api_route(
        "/predict/batch",
        predict_batch,
        methods=["POST"],
        tags=["scoring"],
        route_class_override=DirectRoute,
        dependencies=guard,
        response_model=BatchPredictResponse | ExplainedBatchPredictResponse,
        responses=scoring_errors,
        openapi_extra=request_body_openapi(BatchPredictRequest),
    )
    router.add_api_route("/health", health, methods=["GET"], tags=["operations"])
    router.add_api_route(
        "/ready", ready, methods=["GET"], tags=["operations"], response_model=Ready, responses=_NOT_READY
    )
    router.add_api_route("/model", model_info, methods=["GET"], tags=["operations"], responses=_NOT_READY)
    router.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    add_brand_routes(router)
