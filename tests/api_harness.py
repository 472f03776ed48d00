"""The API test settings and a client with the app's lifespan running; shared by the API test modules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.context import context_of
from api.settings import ApiSettings

KEY = "s3cret-key"


def settings(**values: Any) -> ApiSettings:
    # Explicit values for everything the environment could otherwise set on the test machine.
    defaults: dict[str, Any] = {
        "api_key": None,
        "hf_model_repo": "nobody/nothing",
        "model_sha256": None,
        "kafka_bootstrap_servers": None,
    }
    return ApiSettings.model_validate({**defaults, **values})


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[TestClient]:
    """A TestClient with the lifespan running and the model load settled (loaded or failed)."""
    with TestClient(app) as client:
        assert context_of(app).model.wait(120), "model load did not settle"
        yield client
