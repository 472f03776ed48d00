"""Everything one app instance shares between requests, hung on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from api.batcher import MicroBatcher
from api.brand_book import BrandBook
from api.brand_follower import ReputationFollower
from api.metrics import ApiMetrics
from api.model_state import LoadedModel, ModelNotReadyError, ModelState, PredictorLoader
from api.settings import ApiSettings
from sentiment_model.operations import ModelOperations

if TYPE_CHECKING:  # api.auth reads the context of a request: import it at run time the other way round
    from api.auth import ApiKeyGuard


@dataclass
class ApiContext:
    """Settings, model, loader, batcher and metrics of one app (tests build many apps side by side)."""

    settings: ApiSettings
    model: ModelState
    metrics: ApiMetrics
    predictor_loader: PredictorLoader
    """Turns the resolved model file into a predictor (``Predictor.load``; tests swap it)."""
    brands: BrandBook
    """The latest windows of each brand on the reputation topic (kept by :attr:`follower`)."""
    api_key: ApiKeyGuard | None = None
    """Checks the API key on scoring requests; None when ``API_KEY`` is unset."""
    batcher: MicroBatcher[LoadedModel] | None = None
    """Created when the app starts serving (lifespan), so it belongs to the serving event loop."""
    reloader: ModelOperations | None = None
    """Hot reload, while serving; None when polling is off (``MODEL_POLL_INTERVAL_SECONDS=0`` or a pinned
    ``MODEL_REVISION``)."""
    follower: ReputationFollower | None = None
    """Reads the reputation topic into :attr:`brands` while serving; None without
    ``KAFKA_BOOTSTRAP_SERVERS``."""

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
