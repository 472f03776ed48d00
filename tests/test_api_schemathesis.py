"""Property-based run of the API against its own OpenAPI document: no input may cause a server error.

Schemathesis generates requests from the published schema and checks every response against it as well:
no 5xx, and status codes, content types and bodies as the document declares them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import settings
from schemathesis.specs.openapi.checks import negative_data_rejection

from api.context import context_of
from api.main import create_app
from api.settings import ApiSettings

# The document does not depend on the model, so it is read from an app that is never served. (The lazy
# `schemathesis.pytest.from_fixture` would be neater but breaks on pytest 9: it reads `node._nodeid`.)
schema = schemathesis.openapi.from_dict(create_app(ApiSettings(api_key=None)).openapi())


@pytest.fixture(scope="module")
def served_app(small_model: Path) -> FastAPI:
    """An app serving the real test model; schemathesis runs its lifespan (model load, batcher)."""
    app = create_app(ApiSettings(api_key=None, model_path=small_model))
    schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the lifespan, kept alive for the session
    assert context_of(app).model.wait(120)
    assert context_of(app).model.loaded is not None
    return app


@schema.parametrize()
@settings(max_examples=30, deadline=None)
def test_no_server_error_and_responses_match_the_schema(
    case: schemathesis.Case[Any], served_app: FastAPI
) -> None:
    response = case.call(app=served_app)
    # 413 refuses any body over MAX_BODY_BYTES before it is parsed: schema-violating data generated that
    # large (texts over their maxLength) is rejected there, which the negative-data check does not list.
    excluded = [negative_data_rejection] if response.status_code == 413 else []
    case.validate_response(response, excluded_checks=excluded)
