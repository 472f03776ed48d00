"""A route that declares the API key enforces it, whichever way it is declared and whatever its class;
a DirectRoute refuses any dependency it would not run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.auth import require_api_key
from api.direct_route import DirectRoute, UnsupportedDependencyError
from api.main import create_app
from tests.api_harness import KEY, serving, settings

GUARD = [Depends(require_api_key)]


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def on_route(app: FastAPI, route_class: type[APIRoute]) -> None:
    app.router.add_api_route(
        "/extra", hello, methods=["POST"], route_class_override=route_class, dependencies=GUARD
    )


def on_router(app: FastAPI, route_class: type[APIRoute]) -> None:
    router = APIRouter(dependencies=GUARD, route_class=route_class)
    router.add_api_route("/extra", hello, methods=["POST"])
    app.include_router(router)


def on_include(app: FastAPI, route_class: type[APIRoute]) -> None:
    router = APIRouter(route_class=route_class)
    router.add_api_route("/extra", hello, methods=["POST"])
    app.include_router(router, dependencies=GUARD)


def on_nested_include(app: FastAPI, route_class: type[APIRoute]) -> None:
    inner, outer = APIRouter(route_class=route_class), APIRouter()
    inner.add_api_route("/extra", hello, methods=["POST"])
    outer.include_router(inner, dependencies=GUARD)
    app.include_router(outer)


@pytest.mark.parametrize("declare", [on_route, on_router, on_include, on_nested_include])
@pytest.mark.parametrize("route_class", [DirectRoute, APIRoute])
def test_a_route_declaring_the_key_is_401_without_it(
    small_model: Path, declare: Callable[[FastAPI, type[APIRoute]], None], route_class: type[APIRoute]
) -> None:
    app = create_app(settings(model_path=small_model, api_key=KEY))
    declare(app, route_class)
    with serving(app) as client:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            refused = client.post("/extra", headers=headers)
            assert refused.status_code == 401, headers
            assert "API key" in refused.json()["detail"]
        for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
            allowed = client.post("/extra", headers=headers)
            assert (allowed.status_code, allowed.text) == (200, "hello")
        security = client.get("/openapi.json").json()["paths"]["/extra"]["post"]["security"]
        assert {"APIKeyHeader": []} in security


def test_the_key_is_checked_before_the_body_is_read(small_model: Path) -> None:
    with serving(create_app(settings(model_path=small_model, api_key=KEY))) as client:
        invalid = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
        assert invalid.status_code == 401
        assert client.post("/predict", json={"text": ""}, headers={"X-API-Key": KEY}).status_code == 422


async def tenant() -> str:
    return "acme"


async def no_tenant() -> None:
    raise HTTPException(403, "no tenant")


async def with_query(request: Request, page: int = 1) -> Response:
    return PlainTextResponse(str(page))


def test_a_direct_route_refuses_what_it_would_not_run(small_model: Path) -> None:
    app = create_app(settings(model_path=small_model, api_key=KEY))
    with pytest.raises(UnsupportedDependencyError, match="tenant would be documented but never run"):
        app.router.add_api_route(
            "/a", hello, methods=["POST"], route_class_override=DirectRoute, dependencies=[Depends(tenant)]
        )
    with pytest.raises(UnsupportedDependencyError, match="declares page"):
        app.router.add_api_route("/b", with_query, methods=["GET"], route_class_override=DirectRoute)
    # An included copy gets FastAPI's own handler, so what the inclusion adds runs too.
    router = APIRouter(route_class=DirectRoute)
    router.add_api_route("/c", hello, methods=["POST"])
    app.include_router(router, dependencies=[Depends(no_tenant)])
    refused = TestClient(app).post("/c")
    assert (refused.status_code, refused.json()) == (403, {"detail": "no tenant"})
