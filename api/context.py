"""Everything one app instance shares between requests, hung on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from fastapi import FastAPI
from starlette.requests import HTTPConnection, Request

from api.auth import ApiKeyGuard
from api.batcher import MicroBatcher
from api.metrics import ApiMetrics
from api.model_state import LoadedModel, ModelNotReadyError, ModelState, PredictorLoader
from api.reload import ModelReloader
from api.settings import ApiSettings


@dataclass
class ApiContext:
    """Settings, model, loader, batcher and metrics of one app (tests build many apps side by side)."""

    settings: ApiSettings
    model: ModelState
    metrics: ApiMetrics
    predictor_loader: PredictorLoader
    """Turns the resolved model file into a predictor (``Predictor.load``; tests swap it)."""
    api_key: ApiKeyGuard | None = None
    """Checks the API key on scoring requests; None when ``API_KEY`` is unset."""
    batcher: MicroBatcher[LoadedModel] | None = None
    """Created when the app starts serving (lifespan), so it belongs to the serving event loop."""
    reloader: ModelReloader | None = None
    """Hot reload, while serving; None when polling is off (``MODEL_POLL_INTERVAL_SECONDS=0`` or a pinned
    ``MODEL_REVISION``)."""

    def authorize(self, request: Request) -> None:
        """Raise a 401 unless the request may use the scoring routes."""
        if self.api_key is not None:
            self.api_key.check(request.headers)

    def scorer(self) -> MicroBatcher[LoadedModel]:
        """The batcher, or :class:`ModelNotReadyError` when the app is not serving (yet)."""
        if self.batcher is None:
            raise ModelNotReadyError(self.model.status, "the API has not finished starting")
        return self.batcher


def api_context(connection: HTTPConnection) -> ApiContext:
    """The context of the app serving ``connection``."""
    return cast(ApiContext, connection.app.state.api)


def context_of(app: FastAPI) -> ApiContext:
    """The context of ``app`` (built by :func:`api.main.create_app`)."""
    return cast(ApiContext, app.state.api)
