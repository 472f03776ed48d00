"""The FastAPI app: ``uvicorn api.main:app`` serves it with settings from the environment.

:func:`create_app` builds independent instances (own settings, model, metrics registry) for tests.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from api.auth import ApiKeyGuard
from api.batcher import MicroBatcher
from api.body_limit import BodyLimitMiddleware
from api.brand_book import BrandBook
from api.brand_follower import start_follower
from api.context import ApiContext, context_of
from api.errors import model_not_ready_handler, validation_error_handler
from api.metrics import ApiMetrics, MetricsMiddleware
from api.model_state import ModelNotReadyError, ModelState, PredictorLoader
from api.routes import add_routes
from api.settings import ApiSettings
from sentiment_model import Predictor, resolve_model
from sentiment_model.operations import ModelOperations

DESCRIPTION = """Ad-hoc sentiment scoring with the same fastText model the Kafka workers use, and each
brand's reputation as the reputation stage judges it (`/brands`; a page for people at `/`).

`/predict` and `/predict/batch` need an API key when the server has `API_KEY` set."""

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start loading the model (without waiting for it), own the batcher for the serving loop, and run hot
    reload while serving."""
    api = context_of(app)
    settings = api.settings
    if not api.model.loading_started:  # a second lifespan of the same app keeps the first load
        api.model.load_in_background(lambda: resolve_model(settings), api.predictor_loader)
    batcher = MicroBatcher(api.model.score, settings.max_texts_per_call, settings.inline_scoring_chars)
    api.batcher = batcher
    reloader = None
    if ModelOperations.enabled(settings):
        operations = ModelOperations(
            settings, api.metrics.model_ops, api.model.promote, scored_by="model call"
        )
        reloader = api.reloader = api.model.operations = operations
        api.model.when_loaded(lambda loaded: operations.start(loaded.resolved))  # never, if it fails to load
    follower = None
    if api.follower is None:  # a second lifespan of the same app reads through the first one's follower
        follower = api.follower = start_follower(settings, api.brands)
    # Everything imported so far lives as long as the process: take it out of the cyclic GC's sight, or a
    # full collection walks it all and its pause becomes the requests' p99.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if follower is not None:
            follower.stop()
            if api.follower is follower:
                api.follower = None
        if reloader is not None:
            reloader.stop()
            if api.model.operations is reloader:
                api.model.operations = None
            if api.reloader is reloader:
                api.reloader = None
        if api.batcher is batcher:  # serve one app from one event loop at a time: the batcher is per loop
            api.batcher = None
        await batcher.aclose()


def create_app(
    settings: ApiSettings | None = None, predictor_loader: PredictorLoader = Predictor.load
) -> FastAPI:
    """A new app; ``predictor_loader`` turns the resolved model file into a predictor."""
    settings = settings if settings is not None else ApiSettings()
    app = FastAPI(
        title="Sentiment API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    state = ModelState()
    app.state.api = ApiContext(
        settings=settings,
        model=state,
        metrics=ApiMetrics(state),
        predictor_loader=predictor_loader,
        brands=BrandBook(
            settings.brand_page_max_brands, settings.brand_page_max_windows, settings.brand_page_examples
        ),
        api_key=ApiKeyGuard(settings.api_key) if settings.api_key is not None else None,
    )
    add_routes(app.router, settings)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(ModelNotReadyError, model_not_ready_handler)
    # Added last = outermost: metrics also see the 413s the body limit answers.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=context_of(app).metrics, routes=app.router.routes)
    return app


app = create_app()
